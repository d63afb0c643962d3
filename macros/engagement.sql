{#-
    Email engagement and send time (DESIGN.md "Engagement and send time"; docs/models.md
    "Engagement and send time"): the rules several models share, and the bookkeeping of the two
    fields that depend on as_of (email_opens_30d, email_clicks_30d).
-#}

{% macro email_event_types() -%}
    {{ return(['email_delivered', 'email_open', 'email_click', 'email_bounce', 'email_unsubscribe', 'email_spam_report']) }}
{%- endmacro %}

{% macro email_status(latest_status_event, marketing_consent) -%}
    {#-
        subscribed, unsubscribed, bounced or complained: the latest of the customer's unsubscribe,
        bounce and spam-report events; a CRM consent of false is unsubscribed (a complaint stays a
        complaint: it says more); nothing of the kind is subscribed.
    -#}
    case
        when {{ latest_status_event }} = 'email_spam_report' then 'complained'
        when {{ marketing_consent }} = false then 'unsubscribed'
        when {{ latest_status_event }} = 'email_unsubscribe' then 'unsubscribed'
        when {{ latest_status_event }} = 'email_bounce' then 'bounced'
        else 'subscribed'
    end
{%- endmacro %}

{% macro email_window_end(occurred_at) -%}
    {#- the instant an engagement leaves the email_*_30d window: email_engagement_window_days x 24 h later -#}
    {{ dbt.dateadd('hour', 24 * var('email_engagement_window_days'), occurred_at) }}
{%- endmacro %}

{% macro email_engagement_counts(engagements, as_of) -%}
    {#-
        Per customer of `engagements` (customer_id, event_type, occurred_at: their opens and clicks),
        the opens and clicks in the window (as_of - email_engagement_window_days x 24 h, as_of], and
        the interval of as_of values over which those counts hold: they change only when as_of
        reaches an engagement (it enters) or its window end (it leaves). valid_from is the latest
        such instant at or before as_of, valid_until the earliest after it; null means unbounded.
        A later cycle rewrites a stored profile only when its as_of leaves [valid_from, valid_until).
    -#}
    select
        customer_id,
        count(case
            when event_type = 'email_open' and occurred_at <= {{ as_of }} and {{ email_window_end('occurred_at') }} > {{ as_of }}
                then 1
        end) as email_opens,
        count(case
            when event_type = 'email_click' and occurred_at <= {{ as_of }} and {{ email_window_end('occurred_at') }} > {{ as_of }}
                then 1
        end) as email_clicks,
        greatest(
            max(case when occurred_at <= {{ as_of }} then occurred_at end),
            max(case when {{ email_window_end('occurred_at') }} <= {{ as_of }} then {{ email_window_end('occurred_at') }} end)
        ) as counts_valid_from,
        least(
            min(case when occurred_at > {{ as_of }} then occurred_at end),
            min(case when {{ email_window_end('occurred_at') }} > {{ as_of }} then {{ email_window_end('occurred_at') }} end)
        ) as counts_valid_until
    from {{ engagements }}
    group by customer_id
{%- endmacro %}

{% macro email_counts_moved(as_of) -%}
    {#- a stored profile whose email_opens_30d / email_clicks_30d no longer hold at as_of -#}
    (
        (_email_counts_valid_from is not null and {{ as_of }} < _email_counts_valid_from)
        or (_email_counts_valid_until is not null and {{ as_of }} >= _email_counts_valid_until)
    )
{%- endmacro %}

{% macro within_an_hour(hour, center_hour) -%}
    {#- hours of the day at most one apart, around midnight too (23 and 0 are neighbours) -#}
    (({{ hour }} - {{ center_hour }} + 24) % 24 in (0, 1, 23))
{%- endmacro %}

{% macro hour_windows(relation, hour, weight, keys) -%}
    {#-
        Each row of `relation` counted in the three one-hour-either-side windows that hold `hour`
        (centers hour - 1, hour, hour + 1, around midnight): keys, center_hour, window_weight (the
        row's weight) and center_weight (the weight only where the row's hour is the center). Summed
        per center it gives each window's total without a join.
    -#}
    {%- for shift in [23, 0, 1] %}
    select
        {{ keys | join(', ') }},
        ({{ hour }} + {{ shift }}) % 24 as center_hour,
        {{ weight }} as window_weight,
        {{ weight if shift == 0 else 'cast(0 as ' ~ weight_type() ~ ')' }} as center_weight
    from {{ relation }}
    {{ 'union all' if not loop.last }}
    {%- endfor %}
{%- endmacro %}

{% macro weight_type() -%}
    {#- exact sums in any order, so an incremental cycle and a full rebuild agree to the last digit -#}
    {{ return('decimal(38, 12)') }}
{%- endmacro %}

{% macro peer_hour_joins(customers) -%}
    {#- the peer groups of `customers` (timezone_used, country): joins for peer_hour() -#}
    left join {{ ref('int_send_hour_peers_ranked') }} as timezone_peers
        on
            timezone_peers.peer_level = 'timezone'
            and {{ customers }}.timezone_used = timezone_peers.peer_key
            and timezone_peers.members >= {{ var('send_hour_min_peers') }}
    left join {{ ref('int_send_hour_peers_ranked') }} as country_peers
        on
            country_peers.peer_level = 'country'
            and {{ customers }}.country = country_peers.peer_key
            and country_peers.members >= {{ var('send_hour_min_peers') }}
    left join {{ ref('int_send_hour_peers_ranked') }} as everyone
        on everyone.peer_level = 'everyone'
{%- endmacro %}

{% macro peer_hour() -%}
    {#- the hour of customers like them: their timezone's, else their country's, else everyone's -#}
    coalesce(timezone_peers.best_hour, country_peers.best_hour, everyone.best_hour, {{ var('send_hour_default') }})
{%- endmacro %}

{% macro recounted_or_stored(recounted, stored_column) -%}
    {#- customer_profiles: a value this cycle computed for a recounted customer, else the stored one
        (still right: as_of stayed inside its interval) -#}
    {#- a full rebuild recounts everyone (every customer with a profile is touched) -#}
    case
        when recounted_customers.customer_id is not null then {{ recounted }}
        {%- if is_incremental() %}
        else stored_profiles.{{ stored_column }}
        {%- endif %}
    end
{%- endmacro %}
