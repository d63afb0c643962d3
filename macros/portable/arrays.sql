{#- Lists (arrays): ordered aggregation, slicing, binding a value to a name. -#}

{% macro order_terms(order_by) -%}
    {#-
        An ORDER BY list ('a desc nulls last, b' or a list of such items) as
        [{expr, descending, nulls_first}]. An item without NULLS FIRST/LAST sorts nulls last, as
        DuckDB does; write the nulls order wherever a key can be null. Items are split on commas:
        an expression holding a comma must come as its own list item.
    -#}
    {%- set items = order_by.split(',') if order_by is string else order_by -%}
    {%- set terms = [] -%}
    {%- for item in items -%}
        {%- set words = item.strip().split() -%}
        {%- set nulls_first = false -%}
        {%- if words | length > 2 and words[-2] | lower == 'nulls' -%}
            {%- set nulls_first = words[-1] | lower == 'first' -%}
            {%- set words = words[:-2] -%}
        {%- endif -%}
        {%- set descending = false -%}
        {%- if words | length > 1 and words[-1] | lower in ['asc', 'desc'] -%}
            {%- set descending = words[-1] | lower == 'desc' -%}
            {%- set words = words[:-1] -%}
        {%- endif -%}
        {%- do terms.append({'expr': words | join(' '), 'descending': descending, 'nulls_first': nulls_first}) -%}
    {%- endfor -%}
    {{ return(terms) }}
{%- endmacro %}

{% macro spark_sorted_values(value, order_by, where=none) -%}
    {#-
        Spark has no ORDER BY inside an aggregate: collect (key_1, ..., key_n, value) structs of the
        rows matching `where`, sort them with a comparator that follows order_by (directions and
        nulls), keep the values.
    -#}
    {%- set terms = order_terms(order_by) -%}
    {%- set fields = [] -%}
    {%- for term in terms -%}
        {%- do fields.append("'k" ~ loop.index ~ "', " ~ term.expr) -%}
    {%- endfor -%}
    transform(
        array_sort(
            collect_list(named_struct({{ fields | join(', ') }}, 'v', {{ value }})){% if where %} filter (where {{ where }}){% endif %},
            (l, r) -> {{ spark_comparator(terms) }}
        ),
        x -> x.v
    )
{%- endmacro %}

{% macro spark_comparator(terms, position=0) -%}
    {%- if position >= terms | length -%}
        0
    {%- else -%}
        {%- set term = terms[position] -%}
        {%- set k = 'k' ~ (position + 1) -%}
        case
            when l.{{ k }} is null and r.{{ k }} is not null then {{ -1 if term.nulls_first else 1 }}
            when l.{{ k }} is not null and r.{{ k }} is null then {{ 1 if term.nulls_first else -1 }}
            when l.{{ k }} < r.{{ k }} then {{ 1 if term.descending else -1 }}
            when l.{{ k }} > r.{{ k }} then {{ -1 if term.descending else 1 }}
            else {{ spark_comparator(terms, position + 1) }}
        end
    {%- endif -%}
{%- endmacro %}

{% macro array_agg_ordered(value, order_by, limit=none, where=none) -%}
    {#- the values of a group (of its rows matching `where`) as a list in order_by's order, at most
        `limit` of them; [] for none, never null -#}
    {{ return(adapter.dispatch('array_agg_ordered', 'sendtime')(value, order_by, limit, where)) }}
{%- endmacro %}

{% macro default__array_agg_ordered(value, order_by, limit, where) -%}
    {%- set ordered = 'array_agg(' ~ value ~ ' order by ' ~ (order_by if order_by is string else order_by | join(', ')) ~ ')'
        ~ (' filter (where ' ~ where ~ ')' if where else '') -%}
    coalesce({{ array_first_n(ordered, limit) if limit else ordered }}, {{ empty_array() }})
{%- endmacro %}

{% macro spark__array_agg_ordered(value, order_by, limit, where) -%}
    {%- set ordered = spark_sorted_values(value, order_by, where) -%}
    {{ array_first_n(ordered, limit) if limit else ordered }}
{%- endmacro %}

{% macro empty_array(element_type=none) -%}
    {#- an empty list of strings (or of element_type) -#}
    {{ return(adapter.dispatch('empty_array', 'sendtime')(element_type or dbt.type_string())) }}
{%- endmacro %}

{% macro default__empty_array(element_type) -%}
    cast(array[] as {{ element_type }}[])
{%- endmacro %}

{% macro duckdb__empty_array(element_type) -%}
    cast([] as {{ element_type }}[])
{%- endmacro %}

{% macro spark__empty_array(element_type) -%}
    cast(array() as array<{{ element_type }}>)
{%- endmacro %}

{% macro array_first_n(list, n) -%}
    {#- the first n elements of a list (fewer when it is shorter) -#}
    {{ return(adapter.dispatch('array_first_n', 'sendtime')(list, n)) }}
{%- endmacro %}

{% macro default__array_first_n(list, n) -%}
    ({{ list }})[1:{{ n }}]
{%- endmacro %}

{% macro spark__array_first_n(list, n) -%}
    slice({{ list }}, 1, {{ n }})
{%- endmacro %}

{% macro bind(value, name, body) -%}
    {#- `body` evaluated with `name` bound to `value`, computed once per row (a one-element list and a lambda) -#}
    {{ return(adapter.dispatch('bind', 'sendtime')(value, name, body)) }}
{%- endmacro %}

{% macro default__bind(value, name, body) -%}
    {{ exceptions.raise_compiler_error("bind needs lambdas, which standard SQL lacks: implement " ~ adapter.type() ~ "__bind (macros/portable/arrays.sql)") }}
{%- endmacro %}

{% macro duckdb__bind(value, name, body) -%}
    list_transform([{{ value }}], lambda {{ name }}: {{ body }})[1]
{%- endmacro %}

{% macro spark__bind(value, name, body) -%}
    element_at(transform(array({{ value }}), {{ name }} -> {{ body }}), 1)
{%- endmacro %}

{% macro array_size(list) -%}
    {#- the number of elements of a list -#}
    {{ return(adapter.dispatch('array_size', 'sendtime')(list)) }}
{%- endmacro %}

{% macro default__array_size(list) -%}
    cardinality({{ list }})
{%- endmacro %}

{% macro duckdb__array_size(list) -%}
    len({{ list }})
{%- endmacro %}

{% macro spark__array_size(list) -%}
    size({{ list }})
{%- endmacro %}
