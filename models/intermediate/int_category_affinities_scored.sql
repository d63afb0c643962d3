{{ config(
    unique_key='customer_id',
    post_hook="{{ delete_stale_rows('select customer_id from ' ~ ref('int_customers_touched')) }}",
) }}

{#-
    affinity(category) = sum over the customer's events on products of that category of
    weight x 0.5^(age in days / 30). The stored score is its as_of-independent log2, referenced to
    the customer's latest weighted event t_max (in days since the epoch), computed stably:
        score = t_max / 30 + log2(sum(weight x 2^((t - t_max) / 30)))
    so affinity at any as_of = 2^(score - as_of_days / 30), and the ranking never depends on as_of.
    The terms are summed as decimals: exact in any order, so a rebuild equals the cycles bit for bit.
-#}

with

events as (

    {#- the events of the customers this cycle touched -#}
    select * from {{ ref('int_events_filtered_to_touched_customers') }}

),

products as (

    select * from {{ ref('int_products_deduplicated') }}

),

event_signals as (

    select * from {{ ref('event_signals') }}

),

customers as (

    select * from {{ ref('int_customers_cdc_applied') }}

),

erased_customers as (

    select customer_id from customers
    where is_deleted

),

weighted_events as (

    {#- unknown event types (no seed row), zero weights and products outside the catalog count nowhere -#}
    select
        events.customer_id,
        products.category,
        event_signals.weight,
        events.occurred_at,
        {{ epoch_days('events.occurred_at') }} as event_day
    from events
    inner join event_signals
        on events.event_type = event_signals.event_type
    inner join products
        on events.product_id = products.product_id
    where
        events.customer_id not in (select erased_customers.customer_id from erased_customers)
        and products.category is not null
        and event_signals.weight > 0

),

referenced as (

    select
        *,
        max(event_day) over (partition by customer_id) as reference_day
    from weighted_events

),

scored as (

    select
        customer_id,
        category,
        round(
            max(reference_day) / 30.0
            + log2(cast(sum(cast(weight * pow(2.0, (event_day - reference_day) / 30.0) as decimal(38, 18))) as double)),
            9
        ) as affinity_score,
        count(*) as events_count,
        max(occurred_at) as last_event_at
    from referenced
    group by customer_id, category

),

ranked as (

    select
        *,
        row_number() over (partition by customer_id order by affinity_score desc, category) as category_rank
    from scored

),

final as (

    select
        ---------- ids
        customer_id,

        ---------- strings
        category,

        ---------- numerics
        category_rank,
        affinity_score,
        events_count,

        ---------- timestamps
        last_event_at,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from ranked

)

select * from final
