{#- Local wall-clock time in an IANA timezone, daylight saving included (DESIGN.md "Engagement and send time"). -#}

{% macro local_timestamp(timestamp, zone) -%}
    {#-
        The wall-clock time in `zone` (an IANA name, e.g. 'Europe/Paris') of the naive UTC
        `timestamp`, as a naive timestamp. `zone` must be a name of the iana_timezones seed: join
        the seed first (an unknown name is an error on DuckDB).
    -#}
    {{ return(adapter.dispatch('local_timestamp', 'sendtime')(timestamp, zone)) }}
{%- endmacro %}

{% macro default__local_timestamp(timestamp, zone) -%}
    {#- PostgreSQL: a timestamp without time zone read as UTC, then shown in the zone -#}
    (({{ timestamp }} at time zone 'UTC') at time zone {{ zone }})
{%- endmacro %}

{% macro duckdb__local_timestamp(timestamp, zone) -%}
    {#- ICU: timezone('UTC', ts) reads the naive value as UTC (a TIMESTAMPTZ, whatever the session's
        TimeZone), timezone(zone, tstz) gives its wall clock in the zone -#}
    timezone({{ zone }}, timezone('UTC', {{ timestamp }}))
{%- endmacro %}

{% macro spark__local_timestamp(timestamp, zone) -%}
    {#- the session time zone is UTC (profiles.yml), so the NTZ value is read as UTC -#}
    cast(from_utc_timestamp({{ timestamp }}, {{ zone }}) as timestamp_ntz)
{%- endmacro %}
