{#- Hashes every engine computes alike. -#}

{% macro sha256_hex(text) -%}
    {#- lower-case hex sha256 of a string's UTF-8 bytes: pipeline.store.email_hash's digest -#}
    {{ return(adapter.dispatch('sha256_hex', 'sendtime')(text)) }}
{%- endmacro %}

{% macro default__sha256_hex(text) -%}
    {#- DuckDB; Snowflake and Databricks: sha2(text, 256), PostgreSQL: encode(sha256(convert_to(text, 'UTF8')), 'hex') -#}
    sha256({{ text }})
{%- endmacro %}

{% macro spark__sha256_hex(text) -%}
    sha2({{ text }}, 256)
{%- endmacro %}
