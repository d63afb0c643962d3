{{ config(unique_key='anonymous_id') }}

with

events as (

    select * from {{ ref('int_events_deduplicated') }}

),

{% if is_incremental() %}
current_links as (

    select * from {{ this }}

),
{% endif %}

arrived_links as (

    {#- an event with both ids links them -#}
    select
        anonymous_id,
        customer_id,
        event_id as link_event_id,
        occurred_at as linked_at
    from events
    where
        {{ changed_in_this_cycle() }}
        and anonymous_id is not null
        and customer_id is not null

),

candidate_links as (

    select * from arrived_links

    {% if is_incremental() %}
    union all

    {# the stored link is already the earliest of every older event (events are never removed),
        so a cycle compares it with the arrived links only: no scan of the event history -#}
    select
        anonymous_id,
        customer_id,
        link_event_id,
        linked_at
    from current_links
    where anonymous_id in (select arrived_links.anonymous_id from arrived_links)
    {% endif %}

),

earliest_links as (

    {#- of several links the earliest wins, whenever it arrived -#}
    {{ deduplicate('candidate_links', partition_by='anonymous_id', order_by='linked_at, link_event_id') }}

),

new_links as (

    select
        earliest_links.*,
        {{ 'current_links.customer_id' if is_incremental() else 'cast(null as ' ~ dbt.type_string() ~ ')' }}
            as previous_customer_id
    from earliest_links
    {%- if is_incremental() %}
    left join current_links
        on earliest_links.anonymous_id = current_links.anonymous_id
    where
        current_links.anonymous_id is null
        or earliest_links.link_event_id != current_links.link_event_id
        or earliest_links.customer_id != current_links.customer_id
    {%- endif %}

),

final as (

    select
        ---------- ids
        anonymous_id,
        customer_id,
        previous_customer_id,
        link_event_id,

        ---------- timestamps
        linked_at,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from new_links

)

select * from final
