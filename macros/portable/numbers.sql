{#- Math that differs by name between engines. Both DuckDB and Spark have log2 and pow (double results). -#}

{% macro log2(x) -%}
    {{ return(adapter.dispatch('log2', 'sendtime')(x)) }}
{%- endmacro %}

{% macro default__log2(x) -%}
    (ln({{ x }}) / ln(2))
{%- endmacro %}

{% macro duckdb__log2(x) -%}
    log2({{ x }})
{%- endmacro %}

{% macro spark__log2(x) -%}
    log2({{ x }})
{%- endmacro %}

{% macro pow(base, exponent) -%}
    {{ return(adapter.dispatch('pow', 'sendtime')(base, exponent)) }}
{%- endmacro %}

{% macro default__pow(base, exponent) -%}
    power({{ base }}, {{ exponent }})
{%- endmacro %}

{% macro duckdb__pow(base, exponent) -%}
    pow({{ base }}, {{ exponent }})
{%- endmacro %}

{% macro spark__pow(base, exponent) -%}
    pow({{ base }}, {{ exponent }})
{%- endmacro %}
