{{ config(
    unique_key='customer_id',
    post_hook="{{ delete_stale_rows('select customer_id from ' ~ ref('int_customers_touched')) }}",
) }}

{#-
    best_send_hour: the hour of the customer's day whose one-hour-either-side window holds the most
    evidence of them being there (docs/models.md "Engagement and send time"). The evidence is their
    own recency-weighted activity (int_customer_hours_weighted) plus send_hour_prior_weight
    pseudo-engagements at the hour of customers like them: their timezone's window
    (int_send_hour_peers_ranked) when send_hour_min_peers customers of that timezone have a history,
    else their country's, else everyone's, else send_hour_default. So a customer with little
    history leans on their peers and one with much history gets their own hour; a customer with
    none gets their peers' hour, never null. Ties: the larger weight at the hour itself, then the
    earlier hour.
    best_send_hour_confidence: the part of the customer's own weight within the chosen window,
    over their total weight plus the prior's: 0 with no history (the hour is their peers'), near 1
    for a strong habit with a long history.
    Recomputed for the customers this cycle touched and for every stored customer whose peers'
    hour moved (peer_hour keeps the one used).
-#}

with

customers as (

    select * from {{ ref('int_customers_summarized') }}

),

hours as (

    select * from {{ ref('int_customer_hours_weighted') }}

),

timezones as (

    select * from {{ ref('iana_timezones') }}

),

{% if is_incremental() %}
stored_send_hours as (

    select * from {{ this }}

),

peers_moved as (

    {#- customers whose peers' hour is not the one their stored hour was computed with -#}
    select stored_send_hours.customer_id
    from stored_send_hours
    {{ peer_hour_joins('stored_send_hours') }}
    where stored_send_hours.peer_hour != {{ peer_hour() }}

),
{% endif %}

recomputed_customers as (

    select
        customers.customer_id,
        customers.country,
        coalesce(timezones.zone, 'UTC') as timezone_used
    from customers
    left join timezones
        on customers.timezone = timezones.zone
    where {{ of_recomputed_customers('customers.customer_id') }}
    {%- if is_incremental() %}
        or customers.customer_id in (select peers_moved.customer_id from peers_moved)
    {%- endif %}

),

placed_customers as (

    select
        recomputed_customers.*,
        {{ peer_hour() }} as peer_hour
    from recomputed_customers
    {{ peer_hour_joins('recomputed_customers') }}

),

own_hours as (

    select * from hours
    where customer_id in (select placed_customers.customer_id from placed_customers)

),

own_totals as (

    select
        customer_id,
        sum(hour_weight) as total_weight
    from own_hours
    group by customer_id

),

peer_windows as (

    {#- the windows around the peers' hour, so a customer without activity has candidates too -#}
    {{ hour_windows('placed_customers', 'peer_hour', 'cast(0 as ' ~ weight_type() ~ ')', ['customer_id']) }}

),

windows as (

    {#- every window holding some of the customer's activity, and those around the peers' hour -#}
    {{ hour_windows('own_hours', 'local_hour', 'hour_weight', ['customer_id']) }}

    union all

    select * from peer_windows

),

window_totals as (

    select
        customer_id,
        center_hour,
        sum(window_weight) as own_window_weight,
        sum(center_weight) as own_center_weight
    from windows
    group by customer_id, center_hour

),

scored_windows as (

    {#- the peers' hour counts as send_hour_prior_weight engagements at that hour -#}
    select
        window_totals.customer_id,
        window_totals.center_hour,
        window_totals.own_window_weight,
        window_totals.own_window_weight
        + case
            when {{ within_an_hour('placed_customers.peer_hour', 'window_totals.center_hour') }}
                then cast({{ var('send_hour_prior_weight') }} as {{ weight_type() }})
            else cast(0 as {{ weight_type() }})
        end as window_score,
        window_totals.own_center_weight
        + case
            when placed_customers.peer_hour = window_totals.center_hour
                then cast({{ var('send_hour_prior_weight') }} as {{ weight_type() }})
            else cast(0 as {{ weight_type() }})
        end as center_score
    from window_totals
    inner join placed_customers
        on window_totals.customer_id = placed_customers.customer_id

),

best_windows as (

    {{ deduplicate(
        'scored_windows',
        partition_by='customer_id',
        order_by='window_score desc, center_score desc, center_hour',
    ) }}

),

final as (

    select
        ---------- ids
        placed_customers.customer_id,

        ---------- send hour
        cast(best_windows.center_hour as integer) as best_send_hour,
        cast(coalesce(round(
            cast(best_windows.own_window_weight as double)
            / nullif(cast(coalesce(own_totals.total_weight, 0) as double) + {{ var('send_hour_prior_weight') }}, 0),
            4
        ), 0) as double) as best_send_hour_confidence,

        ---------- what it was computed with
        placed_customers.timezone_used,
        placed_customers.country,
        cast(placed_customers.peer_hour as integer) as peer_hour,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from placed_customers
    inner join best_windows
        on placed_customers.customer_id = best_windows.customer_id
    left join own_totals
        on placed_customers.customer_id = own_totals.customer_id

)

select * from final
