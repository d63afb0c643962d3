{{ config(unique_key='anonymous_id') }}

{#-
    Every anonymous id the events have carried, with the cycle that first saw it. A link that
    changes in a cycle re-attributes older events only when its anonymous id was seen before that
    cycle; this small table answers that without reading the event history.
-#}

-- depends_on: {{ ref('int_cycles_registered') }}
with

events as (

    select * from {{ ref('int_events_deduplicated') }}

),

{% if is_incremental() %}
seen_anonymous_ids as (

    select * from {{ this }}

),
{% endif %}

arrived_anonymous_ids as (

    {#- a first build reads every event, even when it is added to a warehouse with history -#}
    select distinct anonymous_id from events
    where
        {{ changed_in_this_cycle() if is_incremental() else 'true' }}
        and anonymous_id is not null

),

new_anonymous_ids as (

    select * from arrived_anonymous_ids
    {%- if is_incremental() %}
    where anonymous_id not in (select seen_anonymous_ids.anonymous_id from seen_anonymous_ids)
    {%- endif %}

),

final as (

    select
        ---------- ids
        anonymous_id,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from new_anonymous_ids

)

select * from final
