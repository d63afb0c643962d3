{% test list_not_null(model, column_name) %}

{#- lists are never null: an empty list is [] -#}
select {{ column_name }}
from {{ model }}
where {{ column_name }} is null

{% endtest %}
