{{ config(materialized='view') }}

{#-
    What each customer did with each product, the input of associations and recommendations:
    the strongest seed weight of their product events (browse, intent and conversion signals) and
    of their counted orders' items (weighted like a purchase event). Erased customers count nowhere.
-#}

with

events as (

    select * from {{ ref('int_events_attributed') }}

),

event_signals as (

    select * from {{ ref('event_signals') }}

),

customers as (

    select * from {{ ref('int_customers_cdc_applied') }}

),

orders as (

    select * from {{ ref('int_orders_cdc_applied') }}

),

order_items as (

    select * from {{ ref('int_order_items_cdc_applied') }}

),

erased_customers as (

    select customer_id from customers
    where is_deleted

),

counted_orders as (

    select * from orders
    where not is_deleted and status not in ('cancelled', 'refunded')

),

event_interactions as (

    select
        events.customer_id,
        events.product_id,
        event_signals.weight,
        events.occurred_at as interacted_at,
        false as is_ordered
    from events
    inner join event_signals
        on events.event_type = event_signals.event_type
    where
        events.customer_id is not null
        and events.product_id is not null
        and event_signals.signal_category in ('browse', 'intent', 'conversion')
        and event_signals.weight > 0

),

order_interactions as (

    select
        counted_orders.customer_id,
        order_items.product_id,
        (
            select event_signals.weight from event_signals
            where event_signals.event_type = 'purchase'
        ) as weight,
        counted_orders.created_at as interacted_at,
        true as is_ordered
    from order_items
    inner join counted_orders
        on order_items.order_id = counted_orders.order_id
    where
        not order_items.is_deleted
        and order_items.product_id is not null
        and counted_orders.customer_id is not null

),

interactions as (

    select * from event_interactions
    union all
    select * from order_interactions

),

final as (

    select
        ---------- ids
        customer_id,
        product_id,

        ---------- numerics
        max(weight) as strength,

        ---------- booleans
        {{ dbt.bool_or('is_ordered') }} as is_ordered,

        ---------- timestamps
        max(interacted_at) as last_interacted_at

    from interactions
    where customer_id not in (select erased_customers.customer_id from erased_customers)
    group by customer_id, product_id

)

select * from final
