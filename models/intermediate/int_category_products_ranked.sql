{{ config(materialized='ephemeral') }}

{#- The recommendations' fallback order: each category's in-stock products by popularity. -#}

with

products as (

    select * from {{ ref('int_products_deduplicated') }}

),

popularity as (

    select * from {{ ref('int_products_ranked') }}

),

in_stock_products as (

    select * from products
    where is_in_stock

),

scored as (

    select
        in_stock_products.category,
        in_stock_products.product_id,
        round(cast(popularity.popularity_score as double), 9) as popularity_score
    from in_stock_products
    inner join popularity
        on in_stock_products.product_id = popularity.product_id

),

final as (

    select
        ---------- ids
        product_id,

        ---------- strings
        category,

        ---------- numerics
        popularity_score,
        row_number() over (
            partition by category
            order by popularity_score desc, product_id
        ) as category_product_rank

    from scored

)

select * from final
