with

source as (

    select * from {{ lake_source('catalog', 'products') }}

),

final as (

    select
        ----------  ids
        {{ normalize_product_id('product_id') }} as product_id,

        ---------- strings
        {{ clean_string('name') }} as product_name,
        {{ clean_string('category') }} as category,
        {{ normalize_code('currency') }} as currency,
        {{ clean_string('url') }} as url,
        {{ clean_string('image_url') }} as image_url,

        ---------- numerics
        {{ dbt.safe_cast(clean_string('price'), 'decimal(18, 2)') }} as price,

        ---------- booleans
        {{ parse_boolean('in_stock') }} as is_in_stock,

        ---------- lake metadata
        _batch_id,
        _ingested_at,
        _source_line,
        ingest_date

    from source

)

select * from final
