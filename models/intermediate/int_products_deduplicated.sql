{{ config(unique_key='product_id') }}

with

products as (

    select * from {{ ref('stg_catalog__products') }}

),

product_id_aliases as (

    select * from {{ ref('product_id_aliases') }}

),

{% if is_incremental() %}
current_products as (

    select * from {{ this }}

),
{% endif %}

arrived as (

    select * from products
    where {{ lake_batches_of_this_cycle('products') }}

),

canonicalized as (

    select
        {{ canonical_product_id('arrived.product_id', 'product_id_aliases.product_id') }} as product_id,
        arrived.product_name,
        arrived.category,
        arrived.price,
        arrived.currency,
        arrived.url,
        arrived.image_url,
        arrived.is_in_stock,
        arrived._batch_id,
        arrived._ingested_at,
        arrived._source_line
    from arrived
    left join product_id_aliases
        on arrived.product_id = product_id_aliases.alias

),

candidates as (

    select * from canonicalized

    {% if is_incremental() %}
    union all

    select
        product_id,
        product_name,
        category,
        price,
        currency,
        url,
        image_url,
        is_in_stock,
        _batch_id,
        _ingested_at,
        _source_line
    from current_products
    where product_id in (select canonicalized.product_id from canonicalized)
    {% endif %}

),

latest_ingested as (

    {#- the latest ingested row of a product is its current state -#}
    {{ deduplicate(
        'candidates',
        partition_by='product_id',
        order_by='_ingested_at desc, _batch_id desc, _source_line desc',
    ) }}

),

new_products as (

    select
        latest_ingested.*,
        {{ 'current_products.category' if is_incremental() else 'cast(null as ' ~ dbt.type_string() ~ ')' }}
            as previous_category
    from latest_ingested
    {%- if is_incremental() %}
    left join current_products
        on latest_ingested.product_id = current_products.product_id
    where
        current_products.product_id is null
        or latest_ingested._batch_id != current_products._batch_id
        or latest_ingested._source_line != current_products._source_line
    {%- endif %}

),

final as (

    select
        ---------- ids
        product_id,

        ---------- strings
        product_name,
        category,
        previous_category,
        currency,
        url,
        image_url,

        ---------- numerics
        price,

        ---------- booleans
        is_in_stock,

        ---------- lake metadata
        _batch_id,
        _ingested_at,
        _source_line,
        '{{ cycle_id() }}' as _cycle_id

    from new_products

)

select * from final
