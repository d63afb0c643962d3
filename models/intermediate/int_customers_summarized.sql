{{ config(
    unique_key='customer_id',
    post_hook="{{ delete_stale_rows('select customer_id from ' ~ ref('int_customers_touched')) }}",
) }}

{#-
    What a profile says about a customer whatever the date: their current CRM state, when they were
    seen, their counted orders, the lists of what they did (DESIGN.md "Mart contract") and their
    email engagement (DESIGN.md "Engagement and send time"). One row per customer who has a
    profile: a current, undeleted CRM row, or events or orders and no CRM delete. customer_profiles
    adds what depends on as_of (lifecycle_stage, the 30-day email counts), the send hour and the
    recommendations.
-#}

with

customers as (

    select * from {{ ref('int_customers_cdc_applied') }}
    where {{ of_recomputed_customers() }}

),

events as (

    {#- the events of the customers this cycle recomputes -#}
    select * from {{ ref('int_events_filtered_to_touched_customers') }}

),

orders as (

    select * from {{ ref('int_orders_cdc_applied') }}
    where {{ of_recomputed_customers() }} and not is_deleted

),

currency_rates as (

    select * from {{ ref('currency_rates') }}

),

affinities as (

    select * from {{ ref('int_category_affinities_scored') }}
    where {{ of_recomputed_customers() }}

),

profile_customers as (

    {#- a CRM delete erases the customer, whatever events or orders still mention them -#}
    select customer_id from customers
    where not is_deleted
    union
    select customer_id from events
    union
    select customer_id from orders

    except

    select customer_id from customers
    where is_deleted

),

event_stats as (

    select
        customer_id,
        min(occurred_at) as first_seen_at,
        max(occurred_at) as last_seen_at
    from events
    group by customer_id

),

counted_orders as (

    {#- an order in a currency without a rate counts, and adds nothing to lifetime_value -#}
    select
        orders.*,
        currency_rates.rate_to_usd
    from orders
    left join currency_rates
        on orders.currency = currency_rates.currency
    where orders.status not in ('cancelled', 'refunded')

),

order_stats as (

    select
        customer_id,
        count(*) as orders_count,
        sum(total_amount * rate_to_usd) as lifetime_value,
        max(created_at) as last_order_at
    from counted_orders
    group by customer_id

),

latest_orders as (

    {#- the cart starts after the latest order of any status -#}
    select
        customer_id,
        max(created_at) as latest_order_created_at
    from orders
    group by customer_id

),

product_views as (

    select
        customer_id,
        product_id,
        max(occurred_at) as last_viewed_at
    from events
    where event_type = 'product_view' and product_id is not null
    group by customer_id, product_id

),

recently_viewed as (

    {#- a product's latest view counts; ties of the same instant by product_id -#}
    select
        customer_id,
        {{ first_items(ordered_list('product_id', 'last_viewed_at desc, product_id'), var('recently_viewed_max')) }}
            as recently_viewed
    from product_views
    group by customer_id

),

cart_activity as (

    select
        customer_id,
        product_id,
        max(case when event_type = 'add_to_cart' then occurred_at end) as last_added_at,
        max(case when event_type = 'remove_from_cart' then occurred_at end) as last_removed_at
    from events
    where event_type in ('add_to_cart', 'remove_from_cart') and product_id is not null
    group by customer_id, product_id

),

cart_products as (

    {#- added after the latest order and not removed since (a remove at the same instant counts) -#}
    select
        cart_activity.customer_id,
        cart_activity.product_id,
        cart_activity.last_added_at
    from cart_activity
    left join latest_orders
        on cart_activity.customer_id = latest_orders.customer_id
    where
        cart_activity.last_added_at is not null
        and (
            latest_orders.latest_order_created_at is null
            or cart_activity.last_added_at > latest_orders.latest_order_created_at
        )
        and (
            cart_activity.last_removed_at is null
            or cart_activity.last_removed_at < cart_activity.last_added_at
        )

),

carts as (

    select
        customer_id,
        {{ ordered_list('product_id', 'last_added_at desc, product_id') }} as cart
    from cart_products
    group by customer_id

),

email_engagement as (

    select
        customer_id,
        max(case when event_type = 'email_open' then occurred_at end) as last_email_open_at,
        max(case when event_type = 'email_click' then occurred_at end) as last_email_click_at
    from events
    where event_type in ('email_open', 'email_click')
    group by customer_id

),

email_status_events as (

    {#- at the same instant a complaint outranks an unsubscribe, which outranks a bounce -#}
    select
        customer_id,
        event_type,
        occurred_at,
        case event_type when 'email_spam_report' then 1 when 'email_unsubscribe' then 2 else 3 end as status_rank
    from events
    where event_type in ('email_unsubscribe', 'email_bounce', 'email_spam_report')

),

latest_email_status_events as (

    {{ deduplicate('email_status_events', partition_by='customer_id', order_by='occurred_at desc, status_rank') }}

),

top_categories as (

    select
        customer_id,
        {{ ordered_list('category', 'category_rank') }} as top_categories
    from affinities
    where category_rank <= {{ var('top_categories_max') }}
    group by customer_id

),

final as (

    select
        ---------- identity (current CRM state)
        profile_customers.customer_id,
        customers.email,
        customers.first_name,
        customers.last_name,
        customers.country,
        customers.locale,
        customers.timezone,
        customers.marketing_consent,

        ---------- activity
        event_stats.first_seen_at,
        event_stats.last_seen_at,

        ---------- counted orders
        cast(coalesce(order_stats.orders_count, 0) as integer) as orders_count,
        cast(round(coalesce(order_stats.lifetime_value, 0), 2) as decimal(18, 2)) as lifetime_value,
        order_stats.last_order_at,

        ---------- lists
        coalesce(recently_viewed.recently_viewed, {{ empty_list() }}) as recently_viewed,
        coalesce(carts.cart, {{ empty_list() }}) as cart,
        coalesce(top_categories.top_categories, {{ empty_list() }}) as top_categories,

        ---------- email engagement
        {{ email_status('latest_email_status_events.event_type', 'customers.marketing_consent') }} as email_status,
        email_engagement.last_email_open_at,
        email_engagement.last_email_click_at,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from profile_customers
    left join customers
        on profile_customers.customer_id = customers.customer_id
    left join event_stats
        on profile_customers.customer_id = event_stats.customer_id
    left join order_stats
        on profile_customers.customer_id = order_stats.customer_id
    left join recently_viewed
        on profile_customers.customer_id = recently_viewed.customer_id
    left join carts
        on profile_customers.customer_id = carts.customer_id
    left join top_categories
        on profile_customers.customer_id = top_categories.customer_id
    left join email_engagement
        on profile_customers.customer_id = email_engagement.customer_id
    left join latest_email_status_events
        on profile_customers.customer_id = latest_email_status_events.customer_id

)

select * from final
