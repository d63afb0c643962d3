{{ config(
    incremental_strategy='append',
    tags=['association_refresh'],
    pre_hook="{% if is_incremental() and is_refresh_cycle() %}delete from {{ this }}{% endif %}",
) }}


{#-
    Item-to-item associations, recomputed from everyone's behaviour only on a refresh cycle
    (recommendations_refresh_seconds, a forced refresh_associations, every full rebuild); between
    refreshes the table keeps its rows. See _intermediate.yml for the algorithm.
-#}

{%- set max_products_per_customer = var('strongest_products_per_customer') %}
{%- set max_associations_per_product = var('associations_per_product') %}

-- depends_on: {{ ref('int_cycles_registered') }}
with

interactions as (

    select * from {{ ref('int_product_interactions_aggregated') }}

),

{% if is_refresh_cycle() or not is_incremental() %}
strongest_interactions as (

    {#- a customer's 20 strongest products bound the pairs one heavy customer can add -#}
    {{ top_n_per_group(
        'interactions',
        partition_by='customer_id',
        order_by='strength desc, last_interacted_at desc, product_id',
        n=max_products_per_customer,
    ) }}

),

co_occurrences as (

    select
        left_side.product_id,
        right_side.product_id as associated_product_id,
        sum(left_side.strength * right_side.strength) as co_occurrence,
        count(*) as customers_count
    from strongest_interactions as left_side
    inner join strongest_interactions as right_side
        on
            left_side.customer_id = right_side.customer_id
            and left_side.product_id != right_side.product_id
    group by left_side.product_id, right_side.product_id

),

norms as (

    select
        product_id,
        sqrt(sum(strength * strength)) as norm
    from strongest_interactions
    group by product_id

),

scored as (

    select
        co_occurrences.product_id,
        co_occurrences.associated_product_id,
        co_occurrences.customers_count,
        round(co_occurrences.co_occurrence / (left_norms.norm * right_norms.norm), 9) as association_score
    from co_occurrences
    inner join norms as left_norms
        on co_occurrences.product_id = left_norms.product_id
    inner join norms as right_norms
        on co_occurrences.associated_product_id = right_norms.product_id

),

strongest_associations as (

    {{ top_n_per_group(
        'scored',
        partition_by='product_id',
        order_by='association_score desc, associated_product_id',
        n=max_associations_per_product,
    ) }}

),
{% else %}
strongest_associations as (

    {#- not a refresh cycle: nothing to append -#}
    select
        product_id,
        product_id as associated_product_id,
        cast(0 as {{ dbt.type_bigint() }}) as customers_count,
        cast(0 as double) as association_score
    from interactions
    where false

),
{% endif %}

final as (

    select
        ---------- ids
        product_id,
        associated_product_id,

        ---------- numerics
        association_score,
        customers_count,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from strongest_associations

)

select * from final
