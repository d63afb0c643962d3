-- Customers per lifecycle stage with their value: `dbt compile --select lifecycle_overview`, then
-- run the compiled SQL (target/compiled/...) against the warehouse.
with

profiles as (

    select * from {{ ref('customer_profiles') }}

),

final as (

    select
        lifecycle_stage,
        count(*) as customers,
        sum(lifetime_value) as lifetime_value,
        avg(orders_count) as avg_orders,
        sum(case when {{ array_size('cart') }} > 0 then 1 else 0 end) as customers_with_a_cart
    from profiles
    group by lifecycle_stage

)

select * from final
