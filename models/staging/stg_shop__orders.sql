with

source as (

    select * from {{ lake_source('shop', 'orders') }}

),

final as (

    select
        ----------  ids
        {{ clean_string('order_id') }} as order_id,
        {{ clean_string('customer_id') }} as customer_id,

        ---------- change data capture
        op as change_op,
        ts_ms as change_ts_ms,
        source_lsn as change_lsn,
        row_json as change_row_json,

        ---------- strings
        lower({{ clean_string('status') }}) as status,
        {{ normalize_code('currency') }} as currency,

        ---------- numerics
        {{ dbt.safe_cast(clean_string('total_amount'), 'decimal(18, 6)') }} as total_amount,

        ---------- timestamps
        {{ parse_timestamp('created_at') }} as created_at,
        {{ parse_timestamp('updated_at') }} as updated_at,

        ---------- lake metadata
        _batch_id,
        _ingested_at,
        _source_line,
        ingest_date

    from source

)

select * from final
