with

source as (

    select * from {{ lake_source('shop', 'order_items') }}

),

final as (

    select
        ----------  ids
        {{ clean_string('order_item_id') }} as order_item_id,
        {{ clean_string('order_id') }} as order_id,
        {{ normalize_product_id('product_id') }} as product_id,

        ---------- change data capture
        op as change_op,
        ts_ms as change_ts_ms,
        source_lsn as change_lsn,
        row_json as change_row_json,

        ---------- numerics
        {{ dbt.safe_cast(clean_string('quantity'), dbt.type_bigint()) }} as quantity,
        {{ dbt.safe_cast(clean_string('unit_price'), 'decimal(18, 6)') }} as unit_price,

        ---------- lake metadata
        _batch_id,
        _ingested_at,
        _source_line,
        ingest_date

    from source

)

select * from final
