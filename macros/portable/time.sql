{#-
    Timestamps are naive UTC everywhere (docs/architecture.md "Time and ids"): DuckDB TIMESTAMP,
    Spark TIMESTAMP_NTZ (the spark target sets spark.sql.timestampType), microseconds kept.
-#}

{% macro spark__dateadd(datepart, interval, from_date_or_timestamp) -%}
    {#- dbt-spark goes through unix seconds (microseconds lost, LTZ result); timestampadd keeps both -#}
    {%- if datepart | lower in ['second', 'millisecond', 'microsecond'] -%}
        {%- set per_unit = {'second': 1000000, 'millisecond': 1000, 'microsecond': 1}[datepart | lower] -%}
        timestampadd(MICROSECOND, cast(round(({{ interval }}) * {{ per_unit }}) as bigint), {{ from_date_or_timestamp }})
    {%- else -%}
        timestampadd({{ datepart | upper }}, {{ interval }}, {{ from_date_or_timestamp }})
    {%- endif -%}
{%- endmacro %}

{% macro timestamp_literal(text) -%}
    {#- a naive UTC timestamp from 'YYYY-MM-DD HH:MM:SS[.ffffff]' text -#}
    {{ return(adapter.dispatch('timestamp_literal', 'sendtime')(text)) }}
{%- endmacro %}

{% macro default__timestamp_literal(text) -%}
    cast('{{ text }}' as {{ dbt.type_timestamp() }})
{%- endmacro %}

{% macro spark__timestamp_literal(text) -%}
    cast('{{ text }}' as timestamp_ntz)
{%- endmacro %}

{% macro epoch_ms(timestamp) -%}
    {#- a naive UTC timestamp as epoch milliseconds (bigint, microseconds truncated toward minus infinity) -#}
    {{ return(adapter.dispatch('epoch_ms', 'sendtime')(timestamp)) }}
{%- endmacro %}

{% macro default__epoch_ms(timestamp) -%}
    cast(floor({{ dbt.datediff(timestamp_literal('1970-01-01 00:00:00'), timestamp, 'microsecond') }} / 1000) as {{ dbt.type_bigint() }})
{%- endmacro %}

{% macro duckdb__epoch_ms(timestamp) -%}
    {#- DuckDB's epoch_ms(timestamp) rounds the microseconds: floor them, in integers -#}
    {{ bind('epoch_us(' ~ timestamp ~ ')', 'us', '(us - (us % 1000 + 1000) % 1000) // 1000') }}
{%- endmacro %}

{% macro spark__epoch_ms(timestamp) -%}
    {{ bind('timestampdiff(MICROSECOND, ' ~ timestamp_literal('1970-01-01 00:00:00') ~ ', ' ~ timestamp ~ ')', 'us',
            '(us - pmod(us, 1000)) div 1000') }}
{%- endmacro %}

{% macro add_seconds(timestamp, seconds) -%}
    {#- timestamp + a number of seconds (fractions kept to the microsecond) -#}
    {{ return(adapter.dispatch('add_seconds', 'sendtime')(timestamp, seconds)) }}
{%- endmacro %}

{% macro default__add_seconds(timestamp, seconds) -%}
    {{ dbt.dateadd('microsecond', 'cast(round((' ~ seconds ~ ') * 1000000) as ' ~ dbt.type_bigint() ~ ')', timestamp) }}
{%- endmacro %}

{% macro duckdb__add_seconds(timestamp, seconds) -%}
    ({{ timestamp }} + to_microseconds(cast(round(({{ seconds }}) * 1000000) as bigint)))
{%- endmacro %}

{% macro spark__add_seconds(timestamp, seconds) -%}
    timestampadd(MICROSECOND, cast(round(({{ seconds }}) * 1000000) as bigint), {{ timestamp }})
{%- endmacro %}

{% macro current_timestamp_utc() -%}
    {#- now, as a naive UTC timestamp -#}
    {{ return(adapter.dispatch('current_timestamp_utc', 'sendtime')()) }}
{%- endmacro %}

{% macro default__current_timestamp_utc() -%}
    (current_timestamp at time zone 'UTC')
{%- endmacro %}

{% macro spark__current_timestamp_utc() -%}
    {#- the cast reads the instant in the session time zone, UTC on the spark target -#}
    cast(current_timestamp() as timestamp_ntz)
{%- endmacro %}
