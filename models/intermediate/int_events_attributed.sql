{{ config(unique_key='event_id') }}

{#-
    Every deduplicated event with the customer it counts for, kept as a table so the customer
    marts read a customer's events with a plain filter. A cycle rewrites its new events and the
    events of the anonymous ids whose link changed (a login re-attributes old anonymous events).
-#}

{%- set has_relinked_ids = true %}
{#- most cycles: no link of an id seen before this cycle changed, so no read of the history -#}
{%- if execute and is_incremental() %}
    {%- set has_relinked_ids = query_value(
        "select count(*) from " ~ ref('int_anonymous_ids_stitched') ~ " as links"
        ~ " inner join " ~ ref('int_anonymous_ids_seen') ~ " as seen"
        ~ " on links.anonymous_id = seen.anonymous_id"
        ~ " where " ~ changed_in_this_cycle('links._cycle_id')
        ~ " and not " ~ changed_in_this_cycle('seen._cycle_id')
    ) > 0 %}
{%- endif %}

with

events as (

    select * from {{ ref('int_events_deduplicated') }}

),

identity_links as (

    select * from {{ ref('int_anonymous_ids_stitched') }}

),

anonymous_ids_seen as (

    select * from {{ ref('int_anonymous_ids_seen') }}

),

relinked_anonymous_ids as (

    {#- ids whose link changed and that older events carry (seen before this cycle) -#}
    select anonymous_id from identity_links
    where
        {{ changed_in_this_cycle() }}
        and anonymous_id in (
            select anonymous_ids_seen.anonymous_id from anonymous_ids_seen
            where not ({{ changed_in_this_cycle('anonymous_ids_seen._cycle_id') }})
        )

),

rewritten_events as (

    {#- this cycle's events, and the older events of a relinked anonymous id; one reference to the
        events, so DuckDB filters while it scans instead of materializing the whole history -#}
    select * from events
    where
        {{ changed_in_this_cycle() }}
        {%- if has_relinked_ids %}
        or anonymous_id in (select relinked_anonymous_ids.anonymous_id from relinked_anonymous_ids)
        {%- endif %}

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
