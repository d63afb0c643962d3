{{ config(unique_key='email_hash') }}

{#-
    Every email_hash the events have carried, with the cycle that first saw it. An address whose
    customer changes in a cycle re-attributes older events only when its hash was seen before that
    cycle; this small table answers that without reading the event history (as
    int_anonymous_ids_seen does for identity links).
-#}

-- depends_on: {{ ref('int_cycles_registered') }}
with

events as (

    select * from {{ ref('int_events_deduplicated') }}

),

{% if is_incremental() %}
seen_email_hashes as (

    select * from {{ this }}

),
{% endif %}

arrived_email_hashes as (

    select distinct email_hash from events
    where
        {{ changed_in_this_cycle() if is_incremental() else 'true' }}
        and email_hash is not null

),

new_email_hashes as (

    select * from arrived_email_hashes
    {%- if is_incremental() %}
    where email_hash not in (select seen_email_hashes.email_hash from seen_email_hashes)
    {%- endif %}

),

final as (

    select
        ---------- ids
        email_hash,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from new_email_hashes

)

select * from final
