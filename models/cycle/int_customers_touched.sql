{{ config(materialized='table') }}

{#-
    The customers this cycle recomputes: everything that changed since the last committed cycle
    and could change a customer's marts. A full rebuild touches everyone. Two more reasons are
    handled where they are known: lifecycle moves (customer_profiles re-stages every stored row)
    and recommendations that hold a product whose catalog row changed (int_recommendations_ranked).
-#}

{%- set products_relation = ref('int_products_deduplicated') %}
{%- set has_recategorized_products = true %}
{#- the relation may not exist yet (first build, or `dbt docs generate` on a fresh home) -#}
{%- if execute and not flags.FULL_REFRESH and load_relation(products_relation) is not none %}
    {%- set has_recategorized_products = query_value(
        "select count(*) from " ~ products_relation
        ~ " where " ~ changed_in_this_cycle() ~ " and category is distinct from previous_category"
    ) > 0 %}
{%- endif %}

with

events as (

    select * from {{ ref('int_events_attributed') }}

),

identity_links as (

    select * from {{ ref('int_anonymous_ids_stitched') }}

),

customers as (

    select * from {{ ref('int_customers_cdc_applied') }}

),

email_addresses as (

    select * from {{ ref('int_email_addresses_resolved') }}

),

orders as (

    select * from {{ ref('int_orders_cdc_applied') }}

),

order_items as (

    select * from {{ ref('int_order_items_cdc_applied') }}

),

products as (

    select * from {{ ref('int_products_deduplicated') }}

),

of_new_events as (

    select
        customer_id,
        'event' as reason
    from events
    where {{ changed_in_this_cycle() }}

),

of_new_links as (

    {#- a new login re-attributes old anonymous events: both the new and the old owner change -#}
    select
        customer_id,
        'identity_link' as reason
    from identity_links
    where {{ changed_in_this_cycle() }}

    union all

    select
        previous_customer_id,
        'identity_link' as reason
    from identity_links
    where {{ changed_in_this_cycle() }}

),

of_new_address_owners as (

    {#- an address that changed customer moves its engagement events: both customers change -#}
    select
        customer_id,
        'email_address' as reason
    from email_addresses
    where {{ changed_in_this_cycle() }}

    union all

    select
        previous_customer_id,
        'email_address' as reason
    from email_addresses
    where {{ changed_in_this_cycle() }}

),

of_crm_changes as (

    select
        customer_id,
        'crm' as reason
    from customers
    where {{ changed_in_this_cycle() }}

),

of_order_changes as (

    select
        customer_id,
        'order' as reason
    from orders
    where {{ changed_in_this_cycle() }}

    union all

    select
        previous_customer_id,
        'order' as reason
    from orders
    where {{ changed_in_this_cycle() }}

),

changed_items as (

    select * from order_items
    where {{ changed_in_this_cycle() }}

),

of_order_item_changes as (

    {#- an item's order's customer, and the customer of the order it moved from #}
    select
        orders.customer_id,
        'order_item' as reason
    from changed_items
    inner join orders
        on changed_items.order_id = orders.order_id

    union all

    select
        orders.customer_id,
        'order_item' as reason
    from changed_items
    inner join orders
        on changed_items.previous_order_id = orders.order_id

),

recategorized_products as (

    select product_id from products
    where
        {{ changed_in_this_cycle() }}
        and category is distinct from previous_category

),

of_recategorized_products as (

    {#- category affinity follows the current catalog; no recategorized product, no event scan #}
    select
        customer_id,
        'catalog' as reason
    from events
    where
        {{ 'true' if has_recategorized_products else 'false' }}
        and product_id in (select recategorized_products.product_id from recategorized_products)

),

all_reasons as (

    select * from of_new_events
    union all
    select * from of_new_links
    union all
    select * from of_new_address_owners
    union all
    select * from of_crm_changes
    union all
    select * from of_order_changes
    union all
    select * from of_order_item_changes
    union all
    select * from of_recategorized_products

),

distinct_reasons as (

    select distinct
        customer_id,
        reason
    from all_reasons
    where
        customer_id is not null
        {#- the pipeline saw no uncommitted lake file: nothing can be touched, skip every scan #}
        and {{ 'false' if var('nothing_arrived', false) else 'true' }}

),

final as (

    select
        ---------- ids
        customer_id,

        ---------- strings
        {{ dbt.listagg('reason', "','", 'order by reason') }} as reasons

    from distinct_reasons
    group by customer_id

)

select * from final
