{{ config(
    unique_key='customer_id',
    post_hook="{{ delete_stale_rows('select customer_id from ' ~ ref('int_customers_touched')) }}",
) }}

{#-
    The customer profile of DESIGN.md "Mart contract", in the contract's order: the customer's
    summary (current CRM state, activity, counted orders, lists, email engagement), their lifecycle
    stage and 30-day email counts at as_of, their send hour and their recommendations. Which rows a
    cycle rewrites is the business of profiles_to_rewrite: new summaries, new lists, new send hours,
    and stages or email counts that as_of moved, so every as_of field is right at every cycle.
-#}

-- depends_on: {{ ref('int_events_attributed') }}
{%- set stored_counts_moved = true %}
{#- most cycles: as_of left no stored email-count interval, so no read of the event history -#}
{%- if execute and is_incremental() %}
    {%- set stored_counts_moved = query_value(
        "select count(*) from " ~ this ~ " where " ~ email_counts_moved(as_of())
    ) > 0 %}
{%- endif %}

with

customers as (

    select * from {{ ref('int_customers_summarized') }}

),

recommendations as (

    select * from {{ ref('int_recommendations_ranked') }}

),

send_hours as (

    select * from {{ ref('int_customer_send_hours_scored') }}

),

touched_customers as (

    select * from {{ ref('int_customers_touched') }}

),

rewritten_customers as (

    {{ profiles_to_rewrite(summaries='customers', recommendations='recommendations', send_hours='send_hours') }}

),

recommended_products as (

    select
        customer_id,
        {{ ordered_list('product_id', 'recommendation_rank', 'product_id is not null') }} as recommendations
    from recommendations
    where customer_id in (select rewritten_customers.customer_id from rewritten_customers)
    group by customer_id

),

{% if is_incremental() %}
stored_profiles as (

    select * from {{ this }}

),
{% endif %}

recounted_customers as (

    {#- whose email counts this cycle computes: the touched customers (their events are at hand) and
        the stored profiles whose counts as_of left behind; the others keep their stored counts -#}
    select customer_id from touched_customers
    {%- if is_incremental() and stored_counts_moved %}

    union

    select customer_id from stored_profiles
    where {{ email_counts_moved(as_of()) }}
    {%- endif %}

),

email_engagements as (

    select
        customer_id,
        event_type,
        occurred_at
    from {{ ref('int_events_filtered_to_touched_customers') }}
    where
        event_type in ('email_open', 'email_click')
        {#- the table keeps the last build's rows in a cycle that skipped it (nothing arrived) -#}
        and customer_id in (select touched_customers.customer_id from touched_customers)
    {%- if is_incremental() and stored_counts_moved %}

    union all

    select
        customer_id,
        event_type,
        occurred_at
    from {{ ref('int_events_attributed') }}
    where
        event_type in ('email_open', 'email_click')
        and customer_id in (
            select stored_profiles.customer_id from stored_profiles
            where {{ email_counts_moved(as_of()) }}
        )
        and customer_id not in (select touched_customers.customer_id from touched_customers)
    {%- endif %}

),

email_counts as (

    {{ email_engagement_counts('email_engagements', as_of()) }}

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

        ---------- email engagement
        customers.email_status,
        customers.last_email_open_at,
        customers.last_email_click_at,
        cast({{ recounted_or_stored('coalesce(email_counts.email_opens, 0)', 'email_opens_30d') }} as integer)
            as email_opens_30d,
        cast({{ recounted_or_stored('coalesce(email_counts.email_clicks, 0)', 'email_clicks_30d') }} as integer)
            as email_clicks_30d,

        ---------- send time
        send_hours.best_send_hour,
        send_hours.best_send_hour_confidence,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id,
        {{ recounted_or_stored('email_counts.counts_valid_from', '_email_counts_valid_from') }}
            as _email_counts_valid_from,
        {{ recounted_or_stored('email_counts.counts_valid_until', '_email_counts_valid_until') }}
            as _email_counts_valid_until

    from customers
    inner join rewritten_customers
        on customers.customer_id = rewritten_customers.customer_id
    left join recommended_products
        on customers.customer_id = recommended_products.customer_id
    left join send_hours
        on customers.customer_id = send_hours.customer_id
    left join recounted_customers
        on customers.customer_id = recounted_customers.customer_id
    left join email_counts
        on customers.customer_id = email_counts.customer_id
    {%- if is_incremental() %}
    left join stored_profiles
        on customers.customer_id = stored_profiles.customer_id
    {%- endif %}

)

select * from final
