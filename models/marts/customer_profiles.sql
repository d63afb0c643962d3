{{ config(
    unique_key='customer_id',
    post_hook="{{ delete_stale_rows('select customer_id from ' ~ ref('int_customers_touched')) }}",
) }}

{#- the columns of DESIGN.md's profile table, in its order -#}
{%- set profile_columns = [
    'customer_id', 'email', 'first_name', 'last_name', 'country', 'locale', 'timezone',
    'marketing_consent', 'first_seen_at', 'last_seen_at', 'orders_count', 'lifetime_value',
    'last_order_at', 'lifecycle_stage', 'recently_viewed', 'cart', 'top_categories', 'recommendations',
] %}

{#-
    The profile of DESIGN.md "Mart contract", one row per customer who has one: a current,
    undeleted CRM row, or events or orders and no CRM delete. Recomputed for the customers this
    cycle touched; a customer whose recommendations alone changed (a catalog change, a refresh)
    keeps every other field of the stored row, since nothing else of theirs changed; every other
    stored row is re-staged against as_of, so lifecycle_stage is right for everyone at every cycle.
-#}

-- depends_on: {{ ref('int_recommendations_ranked') }}
with

touched_customers as (

    select * from {{ ref('int_customers_touched') }}

),

customers as (

    select * from {{ ref('int_customers_cdc_applied') }}

),

events as (

    {#- the events of the customers this cycle touched -#}
    select * from {{ ref('int_events_filtered_to_touched_customers') }}

),

orders as (

    select * from {{ ref('int_orders_cdc_applied') }}

),

currency_rates as (

    select * from {{ ref('currency_rates') }}

),

affinity as (

    select * from {{ ref('customer_category_affinity') }}

),

recommendations as (

    select * from {{ ref('customer_recommendations') }}

),

{% if is_incremental() %}
current_profiles as (

    select * from {{ this }}

),
{% endif %}

recomputed_customers as (

    select customer_id from touched_customers

),

{% if is_incremental() %}
recommendations_ranked as (

    select * from {{ ref('int_recommendations_ranked') }}

),

relisted_customers as (

    {#- new recommendations, nothing else new -#}
    select distinct customer_id from recommendations_ranked
    where
        has_changed
        and customer_id not in (select recomputed_customers.customer_id from recomputed_customers)

),
{% endif %}

crm_customers as (

    select * from customers
    where customer_id in (select recomputed_customers.customer_id from recomputed_customers)

),

customer_events as (

    select * from events
    where customer_id in (select recomputed_customers.customer_id from recomputed_customers)

),

customer_orders as (

    select * from orders
    where
        customer_id in (select recomputed_customers.customer_id from recomputed_customers)
        and not is_deleted

),

profile_customers as (

    {#- a CRM delete erases the customer, whatever events or orders still mention them -#}
    select customer_id from crm_customers
    where not is_deleted
    union
    select customer_id from customer_events
    union
    select customer_id from customer_orders

    except

    select customer_id from crm_customers
    where is_deleted

),

event_stats as (

    select
        customer_id,
        min(occurred_at) as first_seen_at,
        max(occurred_at) as last_seen_at
    from customer_events
    group by customer_id

),

counted_orders as (

    {#- an order in a currency without a rate counts, and adds nothing to lifetime_value -#}
    select
        customer_orders.*,
        currency_rates.rate_to_usd
    from customer_orders
    left join currency_rates
        on customer_orders.currency = currency_rates.currency
    where customer_orders.status not in ('cancelled', 'refunded')

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
    from customer_orders
    group by customer_id

),

product_views as (

    select
        customer_id,
        product_id,
        max(occurred_at) as last_viewed_at
    from customer_events
    where event_type = 'product_view' and product_id is not null
    group by customer_id, product_id

),

recently_viewed as (

    {#- ties of the same instant: by product_id -#}
    select
        customer_id,
        array_agg(product_id order by last_viewed_at desc, product_id) as recently_viewed
    from product_views
    where product_id is not null
    group by customer_id

),

cart_activity as (

    select
        customer_id,
        product_id,
        max(case when event_type = 'add_to_cart' then occurred_at end) as last_added_at,
        max(case when event_type = 'remove_from_cart' then occurred_at end) as last_removed_at
    from customer_events
    where event_type in ('add_to_cart', 'remove_from_cart') and product_id is not null
    group by customer_id, product_id

),

cart_products as (

    {#- a remove at the same instant as the latest add counts as following it -#}
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
        array_agg(product_id order by last_added_at desc, product_id) as cart
    from cart_products
    group by customer_id

),

top_categories as (

    select
        customer_id,
        array_agg(category order by category_rank) as top_categories
    from affinity
    where
        customer_id in (select recomputed_customers.customer_id from recomputed_customers)
        and category_rank <= 3
    group by customer_id

),

listed_customers as (

    select customer_id from recomputed_customers

    {% if is_incremental() %}
    union

    select customer_id from relisted_customers
    {% endif %}

),

recommended_products as (

    select
        customer_id,
        array_agg(product_id order by rank) as recommendations
    from recommendations
    where customer_id in (select listed_customers.customer_id from listed_customers)
    group by customer_id

),

recomputed_profiles as (

    select
        ---------- ids
        profile_customers.customer_id,

        ---------- strings
        crm_customers.email,
        crm_customers.first_name,
        crm_customers.last_name,
        crm_customers.country,
        crm_customers.locale,
        crm_customers.timezone,

        ---------- booleans
        crm_customers.marketing_consent,

        ---------- timestamps
        event_stats.first_seen_at,
        event_stats.last_seen_at,

        ---------- numerics
        cast(coalesce(order_stats.orders_count, 0) as integer) as orders_count,
        cast(round(coalesce(order_stats.lifetime_value, 0), 2) as decimal(18, 2)) as lifetime_value,

        ---------- timestamps
        order_stats.last_order_at,

        ---------- strings
        {{ lifecycle_stage('order_stats.last_order_at', as_of()) }} as lifecycle_stage,

        ---------- lists
        coalesce(recently_viewed.recently_viewed[1:5], {{ empty_list() }}) as recently_viewed,
        coalesce(carts.cart, {{ empty_list() }}) as cart,
        coalesce(top_categories.top_categories, {{ empty_list() }}) as top_categories,
        coalesce(recommended_products.recommendations, {{ empty_list() }}) as recommendations

    from profile_customers
    left join crm_customers
        on profile_customers.customer_id = crm_customers.customer_id
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
    left join recommended_products
        on profile_customers.customer_id = recommended_products.customer_id

),

{% if is_incremental() %}
relisted_lists as (

    select
        relisted_customers.customer_id,
        coalesce(recommended_products.recommendations, {{ empty_list() }}) as recommendations
    from relisted_customers
    left join recommended_products
        on relisted_customers.customer_id = recommended_products.customer_id

),

carried_profiles as (

    {#- stored rows of customers not recomputed, rewritten when their list changed (relisted) or
        as_of moved them across a 90 or 180 day boundary, either way (restaged); one read of the
        stored rows, so DuckDB never materializes the whole table -#}
    select
        current_profiles.* exclude (lifecycle_stage, recommendations, _cycle_id),
        {{ lifecycle_stage('current_profiles.last_order_at', as_of()) }} as lifecycle_stage,
        coalesce(relisted_lists.recommendations, current_profiles.recommendations) as recommendations
    from current_profiles
    left join relisted_lists
        on current_profiles.customer_id = relisted_lists.customer_id
    where
        current_profiles.customer_id not in (
            select recomputed_customers.customer_id from recomputed_customers
        )
        and (
            relisted_lists.customer_id is not null
            or current_profiles.lifecycle_stage != {{ lifecycle_stage('current_profiles.last_order_at', as_of()) }}
        )

),
{% endif %}

all_profiles as (

    select * from recomputed_profiles

    {% if is_incremental() %}
    union all

    select
        {%- for column in profile_columns %}
        {{ column }}{{ ',' if not loop.last }}
        {%- endfor %}
    from carried_profiles
    {% endif %}

),

final as (

    {#- columns in the order of DESIGN.md's profile table -#}
    select
        *,
        '{{ cycle_id() }}' as _cycle_id
    from all_profiles

)

select * from final
