{{ config(unique_key='event_id') }}

{#-
    Every deduplicated event with the customer it counts for, kept as a table so the customer
    marts read a customer's events with a plain filter: its own customer_id, else the CRM customer
    of its email_hash (an engagement event from a webhook), else its anonymous id's customer. A
    cycle rewrites its new events, the events of the anonymous ids whose link changed (a login
    re-attributes old anonymous events) and those of the email addresses whose customer changed.
-#}

{%- set has_relinked_ids = true %}
{#- most cycles: no link of an id seen before this cycle changed, so no read of the history -#}
{%- if execute and is_incremental() %}
    {%- set has_relinked_ids = query_value(
        "select count(*) from " ~ ref('int_anonymous_ids_stitched') ~ " as links"
        ~ " inner join " ~ ref('int_anonymous_ids_seen') ~ " as seen"
        ~ " on links.anonymous_id = seen.anonymous_id"
        ~ " where " ~ changed_in_this_cycle('links._cycle_id')
        ~ " and not " ~ changed_in_this_cycle('seen._cycle_id')
    ) > 0 %}
{%- endif %}

{%- set has_reassigned_addresses = true %}
{#- most cycles: no address seen before this cycle changed customer, so no read of the history -#}
{%- if execute and is_incremental() %}
    {%- set has_reassigned_addresses = query_value(
        "select count(*) from " ~ ref('int_email_addresses_resolved') ~ " as addresses"
        ~ " inner join " ~ ref('int_email_hashes_seen') ~ " as seen"
        ~ " on addresses.email_hash = seen.email_hash"
        ~ " where " ~ changed_in_this_cycle('addresses._cycle_id')
        ~ " and not " ~ changed_in_this_cycle('seen._cycle_id')
    ) > 0 %}
{%- endif %}

with

events as (

    select * from {{ ref('int_events_deduplicated') }}

),

identity_links as (

    select * from {{ ref('int_anonymous_ids_stitched') }}

),

anonymous_ids_seen as (

    select * from {{ ref('int_anonymous_ids_seen') }}

),

email_addresses as (

    select * from {{ ref('int_email_addresses_resolved') }}

),

email_hashes_seen as (

    select * from {{ ref('int_email_hashes_seen') }}

),

relinked_anonymous_ids as (

    {#- ids whose link changed and that older events carry (seen before this cycle) -#}
    select anonymous_id from identity_links
    where
        {{ changed_in_this_cycle() }}
        and anonymous_id in (
            select anonymous_ids_seen.anonymous_id from anonymous_ids_seen
            where not ({{ changed_in_this_cycle('anonymous_ids_seen._cycle_id') }})
        )

),

reassigned_email_hashes as (

    {#- addresses whose customer changed and that older events carry (seen before this cycle) -#}
    select email_hash from email_addresses
    where
        {{ changed_in_this_cycle() }}
        and email_hash in (
            select email_hashes_seen.email_hash from email_hashes_seen
            where not ({{ changed_in_this_cycle('email_hashes_seen._cycle_id') }})
        )

),

rewritten_events as (

    {#- this cycle's events, and the older events of a relinked anonymous id; one reference to the
        events, so DuckDB filters while it scans instead of materializing the whole history -#}
    select * from events
    where
        {{ changed_in_this_cycle() }}
        {%- if has_relinked_ids %}
        or anonymous_id in (select relinked_anonymous_ids.anonymous_id from relinked_anonymous_ids)
        {%- endif %}
        {%- if has_reassigned_addresses %}
        or email_hash in (select reassigned_email_hashes.email_hash from reassigned_email_hashes)
        {%- endif %}

),

final as (

    select
        ---------- ids
        rewritten_events.event_id,
        {#- the event's own customer_id wins, then its email's CRM customer, then its anonymous_id's #}
        coalesce(rewritten_events.customer_id, email_addresses.customer_id, identity_links.customer_id)
            as customer_id,
        rewritten_events.anonymous_id,
        rewritten_events.product_id,
        rewritten_events.email_hash,

        ---------- strings
        rewritten_events.event_type,
        rewritten_events.properties,

        ---------- booleans
        rewritten_events.customer_id is null
        and email_addresses.customer_id is null
        and identity_links.customer_id is not null as is_stitched,

        ---------- timestamps
        rewritten_events.occurred_at,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from rewritten_events
    left join identity_links
        on rewritten_events.anonymous_id = identity_links.anonymous_id
    left join email_addresses
        on rewritten_events.email_hash = email_addresses.email_hash

)

select * from final
