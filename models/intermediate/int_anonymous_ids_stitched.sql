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

changed_anonymous_ids as (

    select distinct anonymous_id from events
    where
        {{ changed_in_this_cycle() }}
        and anonymous_id is not null
        and customer_id is not null

),

earliest_links as (

    {#- an event with both ids links them; of several links the earliest wins, whenever it arrived -#}
    select
        anonymous_id,
        customer_id,
        event_id as link_event_id,
        occurred_at as linked_at
    from events
    where
        anonymous_id in (select changed_anonymous_ids.anonymous_id from changed_anonymous_ids)
        and customer_id is not null
    qualify row_number() over (
        partition by anonymous_id
        order by occurred_at, event_id
    ) = 1

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
