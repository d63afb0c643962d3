with

source as (

    select * from {{ lake_source('tracking', 'events') }}

),

final as (

    select
        ----------  ids
        {{ clean_string('event_id') }} as event_id,
        {{ clean_string('customer_id') }} as customer_id,
        {{ clean_string('anonymous_id') }} as anonymous_id,
        {{ normalize_product_id('product_id') }} as product_id,
        {#- ingest checked 64 lower-case hex digits -#}
        {{ clean_string('email_hash') }} as email_hash,

        ---------- strings
        lower({{ clean_string('event_type') }}) as event_type,
        properties,

        ---------- timestamps
        {{ parse_timestamp('occurred_at') }} as occurred_at,

        ---------- lake metadata
        _batch_id,
        _ingested_at,
        _source_line,
        ingest_date

    from source

)

select * from final
