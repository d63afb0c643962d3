{% test unique_combination(model, combination_of_columns) %}

{#- the key of a multi-column grain (dbt_utils.unique_combination_of_columns, which we cannot install) -#}
select
    {{ combination_of_columns | join(', ') }},
    count(*) as rows_count
from {{ model }}
group by {{ combination_of_columns | join(', ') }}
having count(*) > 1

{% endtest %}
