{{ config(
    unique_key='customer_id',
    post_hook="{{ delete_stale_rows('select customer_id from ' ~ ref('int_customers_touched')) }}",
) }}

{#-
    When each customer is there, by hour of their day (docs/models.md "Engagement and send time"):
    their email opens and clicks and everything they do on the site, each at its local hour in the
    customer's timezone (UTC when it is missing or not an IANA name of the iana_timezones seed;
    daylight saving by the zone), weighted by kind (send_hour_click_weight, send_hour_open_weight,
    send_hour_site_weight) and by recency: an event send_hour_half_life_days older than the
    customer's latest one counts half. Recency counts from the customer's own latest event, not
    from as_of, so the weights do not move while the customer is quiet. Deliveries, bounces,
    unsubscribes and spam reports say nothing about when the customer reads.
    One row per customer and local hour with activity; hour_share is the hour's part of the
    customer's total (each customer one vote in int_send_hour_peers_ranked). Recomputed for the
    customers this cycle touched who have a profile.
-#}

with

customers as (

    select * from {{ ref('int_customers_summarized') }}
    where {{ of_recomputed_customers() }}

),

events as (

    {#- the events of the customers this cycle recomputes -#}
    select * from {{ ref('int_events_filtered_to_touched_customers') }}

),

timezones as (

    select * from {{ ref('iana_timezones') }}

),

placed_customers as (

    select
        customers.customer_id,
        customers.country,
        coalesce(timezones.zone, 'UTC') as timezone_used
    from customers
    left join timezones
        on customers.timezone = timezones.zone

),

activity as (

    select
        customer_id,
        event_type,
        occurred_at,
        case event_type
            when 'email_click' then {{ var('send_hour_click_weight') }}
            when 'email_open' then {{ var('send_hour_open_weight') }}
            else {{ var('send_hour_site_weight') }}
        end as type_weight
    from events
    where event_type not in ('email_delivered', 'email_bounce', 'email_unsubscribe', 'email_spam_report')

),

latest_activity as (

    select
        customer_id,
        max(occurred_at) as latest_at
    from activity
    group by customer_id

),

weighted as (

    select
        activity.customer_id,
        placed_customers.timezone_used,
        placed_customers.country,
        cast(
            extract(hour from {{ local_timestamp('activity.occurred_at', 'placed_customers.timezone_used') }})
            as integer
        ) as local_hour,
        activity.event_type in ('email_open', 'email_click') as is_email_engagement,
        cast(round(
            activity.type_weight * {{ pow('0.5', '(' ~ epoch_ms('latest_activity.latest_at') ~ ' - '
                                                 ~ epoch_ms('activity.occurred_at') ~ ') / '
                                                 ~ (86400000.0 * var('send_hour_half_life_days'))) }},
            12
        ) as {{ weight_type() }}) as weight
    from activity
    inner join placed_customers
        on activity.customer_id = placed_customers.customer_id
    inner join latest_activity
        on activity.customer_id = latest_activity.customer_id

),

hours as (

    select
        customer_id,
        timezone_used,
        country,
        local_hour,
        sum(weight) as hour_weight,
        sum(case when is_email_engagement then 1 else 0 end) as email_engagements
    from weighted
    group by customer_id, timezone_used, country, local_hour

),

totals as (

    select
        customer_id,
        sum(hour_weight) as total_weight
    from hours
    group by customer_id

),

final as (

    select
        ---------- ids
        hours.customer_id,

        ---------- strings
        hours.timezone_used,
        hours.country,

        ---------- numbers
        hours.local_hour,
        cast(hours.hour_weight as {{ weight_type() }}) as hour_weight,
        cast(round(cast(hours.hour_weight as double) / cast(totals.total_weight as double), 12) as {{ weight_type() }})
            as hour_share,
        cast(hours.email_engagements as {{ dbt.type_bigint() }}) as email_engagements,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from hours
    inner join totals
        on hours.customer_id = totals.customer_id
    where totals.total_weight > 0

)

select * from final
