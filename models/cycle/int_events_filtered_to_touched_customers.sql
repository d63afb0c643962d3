{{ config(materialized='table') }}

{#-
    The attributed events of the customers this cycle recomputes, read from the event history once
    and shared by int_category_affinities_scored, int_customers_summarized and the recommendations, so each
    of them reads a small table instead of filtering every event again. Everyone's events on a full
    rebuild.
-#}

with

events as (

    select * from {{ ref('int_events_attributed') }}

),

touched_customers as (

    select * from {{ ref('int_customers_touched') }}

),

final as (

    select
        {#- only the columns the customer marts read: the scan fetches them for every match -#}
        ---------- ids
        events.customer_id,
        events.product_id,

        ---------- strings
        events.event_type,

        ---------- timestamps
        events.occurred_at

    from events
    where events.customer_id in (select touched_customers.customer_id from touched_customers)

)

select * from final
