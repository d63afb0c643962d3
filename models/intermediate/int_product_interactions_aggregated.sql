{{ config(materialized='view') }}

{#-
    What each customer did with each product, the input of associations and popularity: the
    strongest seed weight of their product events (browse, intent and conversion signals) and of
    their counted orders' items (weighted like a purchase event). Erased customers count nowhere.
    int_recommendations_ranked runs the same macro restricted to the customers it recomputes.
-#}

with

final as (

    {{ product_interactions() }}

)

select * from final
