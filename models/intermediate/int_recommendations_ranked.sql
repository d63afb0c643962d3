{{ config(unique_key='customer_id') }}

{#-
    Every customer's recommendations (the algorithm is described in _intermediate.yml): up to
    recommendations_max in-stock products they have not ordered, ranked by association with what
    they viewed, carted and bought, then popular products of their top categories.
    A cycle rewrites the lists of int_customers_recommended and, since the in-stock rule holds for
    everyone at every cycle, of every customer whose stored list (this table) holds a product that
    left the stock or changed category in this cycle; on a refresh cycle, every stored list. A
    customer left with nothing keeps one row with a null product_id, so the marts see the change.
-#}

{%- set max_recommendations = var('recommendations_max') %}
{%- set strongest_products = var('strongest_products_per_customer') %}
{%- set relists_stored = is_incremental() and is_refresh_cycle() %}
{%- if execute and is_incremental() and not relists_stored %}
    {#- look-up: only a cycle where a product left the stock or changed category relists stored
        customers who were not touched (their events then come from the history) -#}
    {%- set relists_stored = query_value(
        "select count(*) from " ~ ref('int_products_deduplicated') ~ " where " ~ changed_in_this_cycle()
        ~ " and (not coalesce(is_in_stock, false) or category is distinct from previous_category)"
    ) > 0 %}
{%- endif %}
{%- set reads_history = relists_stored or is_refresh_cycle() %}

-- depends_on: {{ ref('int_cycles_registered') }}, {{ ref('int_events_attributed') }}
with

recommended_customers as (

    select * from {{ ref('int_customers_recommended') }}

),

customers as (

    select * from {{ ref('int_customers_cdc_applied') }}

),

products as (

    select * from {{ ref('int_products_deduplicated') }}

),

associations as (

    select * from {{ ref('int_product_associations_scored') }}

),

category_products as (

    select * from {{ ref('int_category_products_ranked') }}

),

affinities as (

    select * from {{ ref('int_category_affinities_scored') }}

),

{% if relists_stored %}
stored_recommendations as (

    select * from {{ this }}

),

delisted_products as (

    select product_id from products
    where
        {{ changed_in_this_cycle() }}
        and (not coalesce(is_in_stock, false) or category is distinct from previous_category)

),

relisted_customers as (

    {#- a refresh relists everyone; otherwise the holders of a product that left the stock -#}
    select distinct customer_id from stored_recommendations
    where
        {{ 'true' if is_refresh_cycle() else 'product_id in (select delisted_products.product_id from delisted_products)' }}
        and customer_id not in (select recommended_customers.customer_id from recommended_customers)

),
{% endif %}

recomputed_customers as (

    select
        customer_id,
        is_touched
    from recommended_customers

    {% if relists_stored %}
    union all

    select
        customer_id,
        false as is_touched
    from relisted_customers
    {% endif %}

),

eligible_customers as (

    {#- erased customers get no recommendation -#}
    select * from recomputed_customers
    where customer_id not in (
        select customers.customer_id from customers
        where customers.is_deleted
    )

),

customer_interactions as (

    {#- touched customers' events come from this cycle's small table, the others' from the history -#}
    {{ product_interactions(
        'select eligible_customers.customer_id from eligible_customers where eligible_customers.is_touched',
        ref('int_events_filtered_to_touched_customers'),
    ) }}

    {% if reads_history %}
    union all

    {{ product_interactions(
        'select eligible_customers.customer_id from eligible_customers where not eligible_customers.is_touched'
    ) }}
    {% endif %}

),

strongest_interactions as (

    {#- a customer's strongest products carry the evidence, as in int_product_associations_scored -#}
    {{ top_n_per_group(
        'customer_interactions',
        partition_by='customer_id',
        order_by='strength desc, last_interacted_at desc, product_id',
        n=strongest_products,
    ) }}

),

ordered_products as (

    select
        customer_id,
        product_id
    from customer_interactions
    where is_ordered

),

in_stock_products as (

    select product_id from products
    where is_in_stock

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

summed_evidence as (

    select
        customer_id,
        product_id,
        sum(evidence) as evidence
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

),

strongest_evidence as (

    {#- ranked on the exact decimal sum, so ties break the same way on every engine -#}
    {{ top_n_per_group(
        'summed_evidence',
        partition_by='customer_id',
        order_by='evidence desc, product_id',
        n=max_recommendations,
    ) }}

),

association_candidates as (

    select
        customer_id,
        product_id,
        cast(evidence as double) as score
    from strongest_evidence

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

    {#- the fallback: popular in-stock products of the customer's top categories; a category's
        first recommendations_max + excluded_count products always hold the first
        recommendations_max the customer may get, so no customer is joined with a whole category -#}
    select
        affinities.customer_id,
        category_products.product_id,
        category_products.popularity_score as score,
        affinities.category_rank
    from affinities
    inner join category_products
        on affinities.category = category_products.category
    left join excluded_counts
        on affinities.customer_id = excluded_counts.customer_id
    where
        affinities.customer_id in (select eligible_customers.customer_id from eligible_customers)
        and affinities.category_rank <= {{ var('top_categories_max') }}
        and category_products.category_product_rank
        <= {{ max_recommendations }} + coalesce(excluded_counts.excluded_count, 0)
        and not exists (
            select ordered_products.product_id from ordered_products
            where
                ordered_products.customer_id = affinities.customer_id
                and ordered_products.product_id = category_products.product_id
        )
        and not exists (
            select association_candidates.product_id from association_candidates
            where
                association_candidates.customer_id = affinities.customer_id
                and association_candidates.product_id = category_products.product_id
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

    {#- a customer with no candidate keeps one row with a null product_id -#}
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

final as (

    select
        ---------- ids
        customer_id,
        product_id,

        ---------- strings
        reason,

        ---------- numerics
        cast(recommendation_rank as integer) as recommendation_rank,
        score,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from new_recommendations

)

select * from final
