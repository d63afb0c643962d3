{{ config(
    unique_key='customer_id',
    post_hook="{{ delete_stale_rows('select customer_id from ' ~ ref('int_customers_cdc_applied') ~ ' where ' ~ changed_in_this_cycle()) }}",
) }}

with

customers as (

    select * from {{ ref('int_customers_cdc_applied') }}

),

final as (

    {#- a later re-create (c/u/r with a greater ts_ms) removes the erasure (post-hook) -#}
    select
        ---------- ids
        customer_id,

        ---------- timestamps
        changed_at as erased_at,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from customers
    where is_deleted and {{ changed_in_this_cycle() }}

)

select * from final
