{{ config(
    unique_key='customer_id',
    post_hook="{{ delete_stale_rows('select customer_id from ' ~ ref('int_recommendations_ranked') ~ ' where has_changed') }}",
) }}

with

recommendations as (

    select * from {{ ref('int_recommendations_ranked') }}

),

final as (

    select
        ---------- ids
        customer_id,

        ---------- numerics
        recommendation_rank as rank,

        ---------- ids
        product_id,

        ---------- numerics
        score,

        ---------- strings
        reason,

        ---------- lake metadata
        '{{ cycle_id() }}' as _cycle_id

    from recommendations
    where has_changed and product_id is not null

)

select * from final
