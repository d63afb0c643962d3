{#- ephemeral: one small step of int_recommendations_ranked, its only reader (a table of its own
    cost a dbt node per cycle: docs/models.md "What a cycle runs") -#}
{{ config(materialized='ephemeral') }}

{#-
    The customers whose recommendations this cycle recomputes: the customers it touched and, on a
    refresh cycle (new associations and popularity), everyone who did something with a product or
    has a category affinity. int_recommendations_ranked adds, from its own rows, the customers whose
    list holds a product that left the stock: the in-stock rule holds for everyone at every cycle.
-#}

-- depends_on: {{ ref('int_cycles_registered') }}
-- depends_on: {{ ref('int_product_interactions_aggregated') }}, {{ ref('int_category_affinities_scored') }}
with

touched_customers as (

    select * from {{ ref('int_customers_touched') }}

),

{% if is_refresh_cycle() %}
interactions as (

    select * from {{ ref('int_product_interactions_aggregated') }}

),

affinities as (

    select * from {{ ref('int_category_affinities_scored') }}

),
{% endif %}

all_customers as (

    select
        customer_id,
        true as is_touched
    from touched_customers

    {% if is_refresh_cycle() %}
    union all

    select
        customer_id,
        false as is_touched
    from interactions

    union all

    select
        customer_id,
        false as is_touched
    from affinities
    {% endif %}

),

final as (

    select
        ---------- ids
        customer_id,

        ---------- booleans
        {{ dbt.bool_or('is_touched') }} as is_touched

    from all_customers
    where customer_id is not null
    group by customer_id

)

select * from final
