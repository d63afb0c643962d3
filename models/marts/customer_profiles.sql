{{ config(
    unique_key='customer_id',
    post_hook="{{ delete_stale_rows('select customer_id from ' ~ ref('int_customers_touched')) }}",
) }}

{#-
    The customer profile of DESIGN.md "Mart contract", in the contract's order: the customer's
    summary (current CRM state, activity, counted orders, lists), their lifecycle stage at as_of
    and their recommendations. Which rows a cycle rewrites is the business of profiles_to_rewrite:
    new summaries, new lists, and stages that as_of moved, so every stage is right at every cycle.
-#}

with

customers as (

    select * from {{ ref('int_customers_summarized') }}

),

recommendations as (

    select * from {{ ref('int_recommendations_ranked') }}

),

rewritten_customers as (

    {{ profiles_to_rewrite(summaries='customers', recommendations='recommendations') }}

),

recommended_products as (

    select
        customer_id,
        {{ ordered_list('product_id', 'recommendation_rank', 'product_id is not null') }} as recommendations
    from recommendations
    where customer_id in (select rewritten_customers.customer_id from rewritten_customers)
    group by customer_id

),

final as (

    select
        ---------- identity (current CRM state)
        customers.customer_id,
        customers.email,
        customers.first_name,
        customers.last_name,
        customers.country,
        customers.locale,
        customers.timezone,
        customers.marketing_consent,

        ---------- activity
        customers.first_seen_at,
        customers.last_seen_at,

        ---------- counted orders
        customers.orders_count,
        customers.lifetime_value,
        customers.last_order_at,
        {{ lifecycle_stage('customers.last_order_at', as_of()) }} as lifecycle_stage,

        ---------- lists
        customers.recently_viewed,
        customers.cart,
        customers.top_categories,
        coalesce(recommended_products.recommendations, {{ empty_list() }}) as recommendations,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from customers
    inner join rewritten_customers
        on customers.customer_id = rewritten_customers.customer_id
    left join recommended_products
        on customers.customer_id = recommended_products.customer_id

)

select * from final
