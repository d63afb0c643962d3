{{ config(
    incremental_strategy='append',
    pre_hook="{{ delete_outranked_events() }}",
) }}

{#-
    Appends the events this cycle is the first to see; a stored copy outranked by an arriving one
    is deleted by the pre-hook first, so no cycle probes every stored event_id to delete.
-#}

with

events as (

    select * from {{ ref('stg_tracking__events') }}

),

product_id_aliases as (

    select * from {{ ref('product_id_aliases') }}

),

{% if is_incremental() %}
current_events as (

    select * from {{ this }}

),
{% endif %}

arrived as (

    select * from events
    where {{ lake_batches_of_this_cycle('events') }}

),

canonicalized as (

    select
        arrived.event_id,
        arrived.event_type,
        arrived.customer_id,
        arrived.anonymous_id,
        {{ canonical_product_id('arrived.product_id', 'product_id_aliases.product_id') }} as product_id,
        arrived.email_hash,
        arrived.properties,
        arrived.occurred_at,
        arrived._batch_id,
        arrived._ingested_at,
        arrived._source_line
    from arrived
    left join product_id_aliases
        on arrived.product_id = product_id_aliases.alias

),

candidates as (

    select
        *,
        false as is_stored
    from canonicalized

    {% if is_incremental() %}
    union all

    {#- the stored copies of the arriving ids: one scan of the table, then only small sets #}
    select
        event_id,
        event_type,
        customer_id,
        anonymous_id,
        product_id,
        email_hash,
        properties,
        occurred_at,
        _batch_id,
        _ingested_at,
        _source_line,
        true as is_stored
    from current_events
    where event_id in (select arrived.event_id from arrived)
    {% endif %}

),

first_ingested as (

    {#- the first accepted record of an event_id wins, whenever a later copy arrives -#}
    {{ deduplicate(
        'candidates',
        partition_by='event_id',
        order_by='_ingested_at, _batch_id, _source_line, is_stored desc',
    ) }}

),

new_events as (

    {#- a stored winner is already in the table: nothing to write #}
    select * from first_ingested
    where not is_stored

),

final as (

    select
        ---------- ids
        event_id,
        customer_id,
        anonymous_id,
        product_id,
        email_hash,

        ---------- strings
        event_type,
        properties,

        ---------- timestamps
        occurred_at,

        ---------- lake metadata
        _batch_id,
        _ingested_at,
        _source_line,
        '{{ cycle_id() }}' as _cycle_id

    from new_events

)

select * from final
