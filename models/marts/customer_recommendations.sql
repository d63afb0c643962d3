{{ config(
    unique_key='customer_id',
    post_hook="{{ delete_stale_rows(
        'select customer_id from ' ~ ref('int_recommendations_ranked')
        ~ ' where ' ~ changed_in_this_cycle() ~ ' and product_id is null'
    ) }}",
) }}

{#- Each customer's recommended products in rank order (int_recommendations_ranked); a list is
    rewritten only when it differs from the stored one, so a refresh republishes what changed. -#}

with

recommendations as (

    select * from {{ ref('int_recommendations_ranked') }}

),

new_lists as (

    {#- the lists recomputed in this cycle, whole -#}
    select
        customer_id,
        {{ ordered_list(recommendation_text(), 'recommendation_rank', 'product_id is not null') }} as recommendations
    from recommendations
    where {{ changed_in_this_cycle() }}
    group by customer_id

),

{% if is_incremental() %}
stored_lists as (

    select
        customer_id,
        {{ ordered_list(recommendation_text(), 'rank') }} as recommendations
    from {{ this }}
    {# only the customers recomputed now: the stored table holds everyone's lists #}
    where customer_id in (select new_lists.customer_id from new_lists)
    group by customer_id

),
{% endif %}

relisted_customers as (

    {{ lists_rewritten('new_lists', 'stored_lists', 'recommendations') }}

),

final as (

    select
        ---------- ids
        recommendations.customer_id,
        recommendations.recommendation_rank as rank,
        recommendations.product_id,

        ---------- numerics
        recommendations.score,

        ---------- strings
        recommendations.reason,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from recommendations
    where
        recommendations.customer_id in (select relisted_customers.customer_id from relisted_customers)
        and recommendations.product_id is not null

)

select * from final
