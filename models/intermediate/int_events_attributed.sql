{{ config(unique_key='event_id') }}

{#-
    Every deduplicated event with the customer it counts for, kept as a table so the customer
    marts read a customer's events with a plain filter. A cycle rewrites its new events and the
    events of the anonymous ids whose link changed (a login re-attributes old anonymous events).
-#}

{%- set has_relinked_ids = true %}
{#- no link changed (most cycles): skip the history read altogether -#}
{%- if execute and is_incremental() %}
    {%- set found = run_query(
        "select count(*) from " ~ ref('int_anonymous_ids_stitched') ~ " where " ~ changed_in_this_cycle()
    ) %}
    {%- set has_relinked_ids = found.columns[0].values()[0] > 0 %}
{%- endif %}

with

events as (

    select * from {{ ref('int_events_deduplicated') }}

),

identity_links as (

    select * from {{ ref('int_anonymous_ids_stitched') }}

),

relinked_anonymous_ids as (

    select anonymous_id from identity_links
    where {{ changed_in_this_cycle() }}

),

arrived_events as (

    select * from events
    where {{ changed_in_this_cycle() }}

),

relinked_events as (

    {#- older events of a relinked anonymous id: the only read of the event history, and only by
        anonymous_id, so the scan filters one column before it reads the others -#}
    select * from events
    where
        {{ 'true' if has_relinked_ids else 'false' }}
        and not ({{ changed_in_this_cycle() }})
        and anonymous_id in (select relinked_anonymous_ids.anonymous_id from relinked_anonymous_ids)

),

rewritten_events as (

    select * from arrived_events
    union all
    select * from relinked_events

),

final as (

    select
        ---------- ids
        rewritten_events.event_id,
        {#- the event's own customer_id wins; an anonymous event is its anonymous_id's customer #}
        coalesce(rewritten_events.customer_id, identity_links.customer_id) as customer_id,
        rewritten_events.anonymous_id,
        rewritten_events.product_id,

        ---------- strings
        rewritten_events.event_type,
        rewritten_events.properties,

        ---------- booleans
        rewritten_events.customer_id is null and identity_links.customer_id is not null as is_stitched,

        ---------- timestamps
        rewritten_events.occurred_at,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from rewritten_events
    left join identity_links
        on rewritten_events.anonymous_id = identity_links.anonymous_id

)

select * from final
