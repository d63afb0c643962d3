{{ config(unique_key='product_id') }}

with

products as (

    select * from {{ ref('int_products_deduplicated') }}

),

{% if is_incremental() %}
current_products as (

    select * from {{ this }}

),
{% endif %}

changed_products as (

    select
        product_id,
        product_name as name,
        category,
        cast(price as decimal(18, 2)) as price,
        currency,
        url,
        image_url,
        coalesce(is_in_stock, false) as in_stock
    from products
    where {{ changed_in_this_cycle() }}

),

new_rows as (

    {#- a catalog row ingested again with the same values is not a change -#}
    select changed_products.*
    from changed_products
    {%- if is_incremental() %}
    left join current_products
        on changed_products.product_id = current_products.product_id
    where
        current_products.product_id is null
        or changed_products.name is distinct from current_products.name
        or changed_products.category is distinct from current_products.category
        or changed_products.price is distinct from current_products.price
        or changed_products.currency is distinct from current_products.currency
        or changed_products.url is distinct from current_products.url
        or changed_products.image_url is distinct from current_products.image_url
        or changed_products.in_stock is distinct from current_products.in_stock
    {%- endif %}

),

final as (

    {#- columns in the order of the contract (docs/architecture.md "The warehouse") -#}
    select
        ---------- ids
        product_id,

        ---------- attributes
        name,
        category,
        price,
        currency,
        url,
        image_url,
        in_stock,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from new_rows

)

select * from final
