{% test normalized_product_id(model, column_name) %}

{#- a product id already trimmed and upper-cased, as the alias seed and every mart hold them -#}
select {{ column_name }}
from {{ model }}
where {{ column_name }} != {{ normalize_product_id(column_name) }}

{% endtest %}
