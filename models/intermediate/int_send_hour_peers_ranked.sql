{{ config(materialized='table') }}

{#-
    The hour of customers like them (docs/models.md "Engagement and send time"): for every
    timezone, every country and everyone, the one-hour-either-side window that holds the most of
    its customers' activity, each customer with a history counting once (the sum of their
    hour_share). Ties: the larger share at the center hour, then the earlier hour. members is the
    number of customers with a history; int_customer_send_hours_scored uses a timezone or a country
    as peers only with send_hour_min_peers of them. Rebuilt every cycle from the hours table (one
    aggregate over at most 24 rows per customer, summed per timezone and country once), so it always
    equals a full rebuild; customers whose peers' hour moved are then recomputed by
    int_customer_send_hours_scored.
-#}

with

hours as (

    select * from {{ ref('int_customer_hours_weighted') }}

),

customers_with_history as (

    {#- one row per customer with a history (a customer's hours share their timezone and country) -#}
    select distinct
        customer_id,
        timezone_used,
        country
    from hours

),

cell_hours as (

    {#- the hours summed per timezone and country first: every peer level rolls up from these
        few rows instead of from every customer's hours once per level -#}
    select
        timezone_used,
        country,
        local_hour,
        sum(hour_share) as hour_share
    from hours
    group by timezone_used, country, local_hour

),

members as (

    select
        'timezone' as peer_level,
        timezone_used as peer_key,
        count(distinct customer_id) as members
    from customers_with_history
    group by timezone_used

    union all

    select
        'country' as peer_level,
        country as peer_key,
        count(distinct customer_id) as members
    from customers_with_history
    where country is not null
    group by country

    union all

    select
        'everyone' as peer_level,
        '*' as peer_key,
        count(distinct customer_id) as members
    from customers_with_history

),

hour_totals as (

    select
        'timezone' as peer_level,
        timezone_used as peer_key,
        local_hour,
        sum(hour_share) as hour_share
    from cell_hours
    group by timezone_used, local_hour

    union all

    select
        'country' as peer_level,
        country as peer_key,
        local_hour,
        sum(hour_share) as hour_share
    from cell_hours
    where country is not null
    group by country, local_hour

    union all

    select
        'everyone' as peer_level,
        '*' as peer_key,
        local_hour,
        sum(hour_share) as hour_share
    from cell_hours
    group by local_hour

),

windows as (

    {{ hour_windows('hour_totals', 'local_hour', 'hour_share', ['peer_level', 'peer_key']) }}

),

window_totals as (

    select
        peer_level,
        peer_key,
        center_hour,
        sum(window_weight) as window_share,
        sum(center_weight) as center_share
    from windows
    group by peer_level, peer_key, center_hour

),

best_windows as (

    {{ deduplicate(
        'window_totals',
        partition_by='peer_level, peer_key',
        order_by='window_share desc, center_share desc, center_hour',
    ) }}

),

final as (

    select
        ---------- ids
        best_windows.peer_level,
        best_windows.peer_key,

        ---------- numbers
        cast(best_windows.center_hour as integer) as best_hour,
        cast(best_windows.window_share as double) as window_share,
        cast(members.members as {{ dbt.type_bigint() }}) as members

    from best_windows
    inner join members
        on
            best_windows.peer_level = members.peer_level
            and best_windows.peer_key = members.peer_key

)

select * from final
