{{ config(materialized='table') }}


{#-
    The recommendations of every customer this cycle recomputes (algorithm in _marts.yml):
    touched customers, customers whose current recommendations hold a product whose catalog row
    changed (the in-stock rule holds for everyone at every cycle), and on a refresh cycle everyone.
    has_changed marks the customers whose list differs from the one stored in
    customer_recommendations; a customer left with no recommendation keeps one marker row with a
    null product_id, so the mart can drop their old rows.
    The stored list is read without ref() (the mart is downstream of this model).
-#}

{%- set stored = adapter.get_relation(this.database, this.schema, 'customer_recommendations') if execute else none %}
{%- set max_recommendations = 10 %}
{#- customers recomputed without being touched (a catalog change, a refresh cycle) need their events
    from the history; every other cycle reads only the touched customers' events -#}
{%- set reads_history = false %}
{#- a full rebuild touches everyone; `dbt docs generate` on a fresh home has no products table -#}
{%- if execute and not flags.FULL_REFRESH and load_relation(ref('products')) is not none %}
    {%- set reads_history = is_refresh_cycle() or query_value(
        "select count(*) from " ~ ref('products') ~ " where _cycle_id = '" ~ cycle_id() ~ "'"
    ) > 0 %}
{%- endif %}

-- depends_on: {{ ref('int_cycles_registered') }}, {{ ref('int_product_interactions_aggregated') }}
-- depends_on: {{ ref('int_events_attributed') }}
with

touched_customers as (

    select * from {{ ref('int_customers_touched') }}

),

customers as (

    select * from {{ ref('int_customers_cdc_applied') }}

),

associations as (

    select * from {{ ref('product_associations') }}

),

popularity as (

    select * from {{ ref('int_products_ranked') }}

),

affinity as (

    select * from {{ ref('customer_category_affinity') }}

),

products as (

    select * from {{ ref('products') }}

),

{% if stored is not none and not flags.FULL_REFRESH %}
stored_recommendations as (

    select * from {{ stored }}

),
{% else %}
stored_recommendations as (

    select
        cast(null as {{ dbt.type_string() }}) as customer_id,
        cast(null as integer) as rank,
        cast(null as {{ dbt.type_string() }}) as product_id,
        cast(null as double) as score,
        cast(null as {{ dbt.type_string() }}) as reason
    where false

),
{% endif %}

recomputed_customers as (

    select customer_id from touched_customers

    {% if reads_history %}
    union

    select customer_id from stored_recommendations
    where
        product_id in (
            select products.product_id from products
            where products._cycle_id = '{{ cycle_id() }}'
        )
    {% endif %}

    {% if is_refresh_cycle() %}
    union

    {#- on a refresh cycle: everyone who did something with a product #}
    select customer_id from {{ ref('int_product_interactions_aggregated') }}

    union

    select customer_id from affinity

    union

    select customer_id from stored_recommendations
    {% endif %}

),

eligible_customers as (

    select customer_id from recomputed_customers
    where customer_id not in (
        select customers.customer_id from customers
        where customers.is_deleted
    )

),

in_stock_products as (

    select * from products
    where in_stock

),

customer_interactions as (

    {#- the macro of int_product_interactions_aggregated, filtered before it aggregates #}
    {{ product_interactions(
        'select eligible_customers.customer_id from eligible_customers where eligible_customers.customer_id'
        ~ ' in (select touched_customers.customer_id from touched_customers)',
        ref('int_events_filtered_to_touched_customers'),
    ) }}

    {% if reads_history %}
    union all

    {{ product_interactions(
        'select eligible_customers.customer_id from eligible_customers where eligible_customers.customer_id'
        ~ ' not in (select touched_customers.customer_id from touched_customers)'
    ) }}
    {% endif %}

),

strongest_interactions as (

    {#- the 20 strongest products of a customer carry the evidence, as in product_associations #}
    select * from customer_interactions
    qualify row_number() over (
        partition by customer_id
        order by strength desc, last_interacted_at desc, product_id
    ) <= 20

),

ordered_products as (

    select
        customer_id,
        product_id
    from customer_interactions
    where is_ordered

),

association_evidence as (

    {#- what the customer viewed, carted and bought, through the item associations ... -#}
    select
        strongest_interactions.customer_id,
        associations.associated_product_id as product_id,
        {#- decimals: the sum is exact in any order, so a rebuild ranks exactly like a cycle -#}
        cast(strongest_interactions.strength as decimal(9, 2))
        * cast(associations.association_score as decimal(18, 9)) as evidence
    from strongest_interactions
    inner join associations
        on strongest_interactions.product_id = associations.product_id

    union all

    -- ... and directly (a product is fully associated with itself)
    select
        customer_id,
        product_id,
        cast(strength as decimal(9, 2)) as evidence
    from strongest_interactions

),

association_candidates as (

    select
        customer_id,
        product_id,
        cast(sum(evidence) as double) as score
    from association_evidence
    where
        product_id in (select in_stock_products.product_id from in_stock_products)
        and not exists (
            select ordered_products.product_id from ordered_products
            where
                ordered_products.customer_id = association_evidence.customer_id
                and ordered_products.product_id = association_evidence.product_id
        )
    group by customer_id, product_id
    qualify row_number() over (
        partition by customer_id order by sum(evidence) desc, product_id
    ) <= {{ max_recommendations }}

),

popular_in_category as (

    {#- in-stock products by popularity within their category: the fallback's order in a category -#}
    select
        in_stock_products.category,
        in_stock_products.product_id,
        round(cast(popularity.popularity_score as double), 9) as score,
        row_number() over (
            partition by in_stock_products.category
            order by round(cast(popularity.popularity_score as double), 9) desc, in_stock_products.product_id
        ) as category_product_rank
    from in_stock_products
    inner join popularity
        on in_stock_products.product_id = popularity.product_id

),

excluded_counts as (

    {#- what a customer's fallback skips: what they ordered and their association candidates -#}
    select
        customer_id,
        count(*) as excluded_count
    from (
        select
            customer_id,
            product_id
        from ordered_products
        union
        select
            customer_id,
            product_id
        from association_candidates
    ) as excluded_products
    group by customer_id

),

category_candidates as (

    {#- the fallback: popular in-stock products of the customer's top 3 categories; a category's
        first 10 + excluded_count products always hold its first 10 the customer may get, so no
        customer is joined with a whole category -#}
    select
        affinity.customer_id,
        popular_in_category.product_id,
        popular_in_category.score,
        affinity.category_rank
    from affinity
    inner join popular_in_category
        on affinity.category = popular_in_category.category
    left join excluded_counts
        on affinity.customer_id = excluded_counts.customer_id
    where
        affinity.customer_id in (select eligible_customers.customer_id from eligible_customers)
        and affinity.category_rank <= 3
        and popular_in_category.category_product_rank
        <= {{ max_recommendations }} + coalesce(excluded_counts.excluded_count, 0)
        and not exists (
            select ordered_products.product_id from ordered_products
            where
                ordered_products.customer_id = affinity.customer_id
                and ordered_products.product_id = popular_in_category.product_id
        )
        and not exists (
            select association_candidates.product_id from association_candidates
            where
                association_candidates.customer_id = affinity.customer_id
                and association_candidates.product_id = popular_in_category.product_id
        )

),

all_candidates as (

    select
        customer_id,
        product_id,
        score,
        'association' as reason,
        1 as reason_order,
        0 as category_rank
    from association_candidates

    union all

    select
        customer_id,
        product_id,
        score,
        'popular_in_category' as reason,
        2 as reason_order,
        category_rank
    from category_candidates

),

ranked as (

    select
        customer_id,
        product_id,
        score,
        reason,
        row_number() over (
            partition by customer_id
            order by reason_order, category_rank, score desc, product_id
        ) as recommendation_rank
    from all_candidates

),

new_recommendations as (

    select
        eligible_customers.customer_id,
        ranked.recommendation_rank,
        ranked.product_id,
        ranked.score,
        ranked.reason
    from eligible_customers
    left join ranked
        on
            eligible_customers.customer_id = ranked.customer_id
            and ranked.recommendation_rank <= {{ max_recommendations }}

    union all

    -- erased customers: no recommendation
    select
        customer_id,
        cast(null as {{ dbt.type_bigint() }}) as recommendation_rank,
        cast(null as {{ dbt.type_string() }}) as product_id,
        cast(null as double) as score,
        cast(null as {{ dbt.type_string() }}) as reason
    from recomputed_customers
    where customer_id not in (select eligible_customers.customer_id from eligible_customers)

),

new_lists as (

    select
        customer_id,
        {{ dbt.listagg(
            "recommendation_rank || ':' || product_id || ':' || score || ':' || reason",
            "'|'",
            'order by recommendation_rank',
        ) }} as signature
    from new_recommendations
    group by customer_id

),

stored_lists as (

    select
        customer_id,
        {{ dbt.listagg("rank || ':' || product_id || ':' || score || ':' || reason", "'|'", 'order by rank') }}
            as signature
    from stored_recommendations
    where customer_id in (select recomputed_customers.customer_id from recomputed_customers)
    group by customer_id

),

final as (

    select
        ---------- ids
        new_recommendations.customer_id,
        new_recommendations.product_id,

        ---------- strings
        new_recommendations.reason,

        ---------- numerics
        cast(new_recommendations.recommendation_rank as integer) as recommendation_rank,
        new_recommendations.score,

        ---------- booleans
        (new_lists.signature is distinct from stored_lists.signature) as has_changed

    from new_recommendations
    inner join new_lists
        on new_recommendations.customer_id = new_lists.customer_id
    left join stored_lists
        on new_recommendations.customer_id = stored_lists.customer_id

)

select * from final
