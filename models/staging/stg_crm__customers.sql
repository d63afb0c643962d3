with

source as (

    select * from {{ lake_source('crm', 'customers') }}

),

final as (

    select
        ----------  ids
        {{ clean_string('customer_id') }} as customer_id,

        ---------- change data capture
        op as change_op,
        ts_ms as change_ts_ms,
        source_lsn as change_lsn,
        row_json as change_row_json,

        ---------- strings
        {{ normalize_email('email') }} as email,
        {{ clean_string('first_name') }} as first_name,
        {{ clean_string('last_name') }} as last_name,
        {{ normalize_code('country') }} as country,
        {{ clean_string('locale') }} as locale,
        {{ clean_string('timezone') }} as timezone,

        ---------- booleans
        {{ parse_boolean('marketing_consent') }} as marketing_consent,

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
