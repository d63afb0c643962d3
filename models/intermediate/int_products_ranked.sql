{{ config(
    incremental_strategy='append',
    tags=['association_refresh'],
    pre_hook="{% if is_incremental() and is_refresh_cycle() %}delete from {{ this }}{% endif %}",
) }}


{#- product popularity (the recommendations' fallback), refreshed with int_product_associations_scored #}

-- depends_on: {{ ref('int_cycles_registered') }}
with

interactions as (

    select * from {{ ref('int_product_interactions_aggregated') }}

),

popularity as (

    select
        product_id,
        sum(strength) as popularity_score,
        count(*) as customers_count
    from interactions
    {%- if is_incremental() and not is_refresh_cycle() %}
    where false
    {%- endif %}
    group by product_id

),

final as (

    select
        ---------- ids
        product_id,

        ---------- numerics
        popularity_score,
        customers_count,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from popularity

)

select * from final
