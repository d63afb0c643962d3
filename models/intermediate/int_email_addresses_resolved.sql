{{ config(unique_key='email_hash') }}

{#-
    Which customer an email address is (DESIGN.md "Engagement and send time"): an engagement event
    that names no customer_id is the CRM customer with that email. One row per address of a current,
    undeleted CRM customer; of several customers with one address the first created (created_at,
    then customer_id) is it. Keyed by the address's sha256 (what events carry, pipeline.store's
    email_hash). Recomputed for the addresses of the customers whose CRM row changed in this cycle
    (their current address and the ones they were); a row is written only when its customer
    changes, previous_customer_id naming the one before, and an address left without a customer
    stays as a row without email or customer, so its events leave the previous one.
-#}

with

customers as (

    select * from {{ ref('int_customers_cdc_applied') }}

),

{% if is_incremental() %}
stored_addresses as (

    select * from {{ this }}

),
{% endif %}

changed_customers as (

    select
        customer_id,
        email
    from customers
    where {{ changed_in_this_cycle() }}

),

affected_addresses as (

    {#- the changed customers' addresses, and the addresses they were the customer of -#}
    select distinct email from changed_customers
    where email is not null
    {%- if is_incremental() %}

    union

    select email from stored_addresses
    where
        email is not null
        and customer_id in (select changed_customers.customer_id from changed_customers)
    {%- endif %}

),

candidates as (

    select
        email,
        customer_id,
        created_at
    from customers
    where
        not is_deleted
        and email in (select affected_addresses.email from affected_addresses)

),

owners as (

    {{ deduplicate('candidates', partition_by='email', order_by='created_at nulls last, customer_id') }}

),

resolved as (

    select
        affected_addresses.email,
        {{ sha256_hex('affected_addresses.email') }} as email_hash,
        owners.customer_id
    from affected_addresses
    left join owners
        on affected_addresses.email = owners.email

),

new_addresses as (

    select
        resolved.email_hash,
        {#- an address without a customer keeps no email -#}
        case when resolved.customer_id is not null then resolved.email end as email,
        resolved.customer_id,
        {{ 'stored_addresses.customer_id' if is_incremental() else 'cast(null as ' ~ dbt.type_string() ~ ')' }}
            as previous_customer_id
    from resolved
    {%- if is_incremental() %}
    left join stored_addresses
        on resolved.email_hash = stored_addresses.email_hash
    where resolved.customer_id is distinct from stored_addresses.customer_id
    {%- else %}
    where resolved.customer_id is not null
    {%- endif %}

),

final as (

    select
        ---------- ids
        email_hash,
        customer_id,
        previous_customer_id,

        ---------- strings
        email,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from new_addresses

)

select * from final
