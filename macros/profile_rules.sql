{#- The profile's business rules that several models share (DESIGN.md "Mart contract"). -#}

{% macro lifecycle_stage(last_order_at, as_of) -%}
    {#- lifecycle_active_days and lifecycle_at_risk_days periods of exactly 24 h before as_of; a
        boundary itself still counts as the younger stage -#}
    case
        when {{ last_order_at }} is null then 'prospect'
        when {{ last_order_at }} >= {{ dbt.dateadd('hour', -24 * var('lifecycle_active_days'), as_of) }} then 'active'
        when {{ last_order_at }} >= {{ dbt.dateadd('hour', -24 * var('lifecycle_at_risk_days'), as_of) }} then 'at_risk'
        else 'lapsed'
    end
{%- endmacro %}

{% macro next_stage_change(last_order_at, as_of) -%}
    {#- the first instant at or after as_of after which lifecycle_stage(last_order_at, as_of) moves
        on (active -> at_risk -> lapsed): the stage at any as_of up to it equals the stage at as_of;
        null when it never moves again (no counted order, or lapsed) -#}
    {%- set active_until = dbt.dateadd('hour', 24 * var('lifecycle_active_days'), last_order_at) -%}
    {%- set at_risk_until = dbt.dateadd('hour', 24 * var('lifecycle_at_risk_days'), last_order_at) -%}
    case
        when {{ active_until }} >= {{ as_of }} then {{ active_until }}
        when {{ at_risk_until }} >= {{ as_of }} then {{ at_risk_until }}
    end
{%- endmacro %}

{#- The profile's list and time helpers, engine-neutral through macros/portable/. -#}

{% macro empty_list() -%}
    {#- an empty list of strings -#}
    {{ empty_array() }}
{%- endmacro %}

{% macro ordered_list(column, order_by, where=none) -%}
    {#- a list aggregate in a given order (of the rows matching `where`), never null -#}
    {{ array_agg_ordered(column, order_by, where=where) }}
{%- endmacro %}

{% macro first_items(column, count) -%}
    {#- the first `count` elements of a list -#}
    {{ array_first_n(column, count) }}
{%- endmacro %}

{% macro epoch_days(column) -%}
    {#- days since 1970-01-01 as a double, from whole milliseconds (a decimal division would round on Spark) -#}
    (cast({{ epoch_ms(column) }} as double) / 86400000)
{%- endmacro %}

{% macro product_interactions(customers_sql=none, events_relation=none) -%}
    {#-
        What each customer did with each product (int_product_interactions_aggregated): the strongest
        seed weight of their product events of the browse, intent and conversion signals and of their
        counted orders' items (weighted as a purchase); erased customers count nowhere.
        customers_sql restricts it to some customers before anything is joined or aggregated, so a
        cycle reads only the rows of the customers it recomputes; events_relation replaces
        int_events_attributed (int_events_filtered_to_touched_customers: no read of the history).
        Used by int_product_interactions_aggregated (everyone) and int_recommendations_ranked.
    -#}
    select
        interactions.customer_id,
        interactions.product_id,
        max(interactions.weight) as strength,
        {{ dbt.bool_or('interactions.is_ordered') }} as is_ordered,
        max(interactions.interacted_at) as last_interacted_at
    from (
        select
            events.customer_id,
            events.product_id,
            event_signals.weight,
            false as is_ordered,
            events.occurred_at as interacted_at
        from {{ events_relation or ref('int_events_attributed') }} as events
        inner join {{ ref('event_signals') }} as event_signals
            on events.event_type = event_signals.event_type
        where
            events.customer_id is not null
            and events.product_id is not null
            and event_signals.signal_category in ('browse', 'intent', 'conversion')
            and event_signals.weight > 0
            {%- if customers_sql %}
            and events.customer_id in ({{ customers_sql }})
            {%- endif %}

        union all

        select
            orders.customer_id,
            order_items.product_id,
            (
                select purchase.weight from {{ ref('event_signals') }} as purchase
                where purchase.event_type = 'purchase'
            ) as weight,
            true as is_ordered,
            orders.created_at as interacted_at
        from {{ ref('int_order_items_cdc_applied') }} as order_items
        inner join {{ ref('int_orders_cdc_applied') }} as orders
            on order_items.order_id = orders.order_id
        where
            not order_items.is_deleted
            and not orders.is_deleted
            and orders.status not in ('cancelled', 'refunded')
            and order_items.product_id is not null
            and orders.customer_id is not null
            {%- if customers_sql %}
            and orders.customer_id in ({{ customers_sql }})
            {%- endif %}
    ) as interactions
    where interactions.customer_id not in (
        select erased.customer_id from {{ ref('int_customers_cdc_applied') }} as erased
        where erased.is_deleted
    )
    group by interactions.customer_id, interactions.product_id
{%- endmacro %}
