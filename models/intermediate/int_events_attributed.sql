{{ config(materialized='view') }}

with

events as (

    select * from {{ ref('int_events_deduplicated') }}

),

identity_links as (

    select * from {{ ref('int_anonymous_ids_stitched') }}

),

final as (

    select
        ---------- ids
        events.event_id,
        {#- the event's own customer_id wins; an anonymous event is its anonymous_id's customer -#}
        coalesce(events.customer_id, identity_links.customer_id) as customer_id,
        events.anonymous_id,
        events.product_id,

        ---------- strings
        events.event_type,
        events.properties,

        ---------- booleans
        events.customer_id is null and identity_links.customer_id is not null as is_stitched,

        ---------- timestamps
        events.occurred_at,

        ---------- lake metadata
        events._cycle_id

    from events
    left join identity_links
        on events.anonymous_id = identity_links.anonymous_id

)

select * from final
