{#-
    Parses a raw lake timestamp (docs/architecture.md "Accepted timestamp forms") into a naive UTC
    timestamp, or null when it is not an accepted form:
      1. epoch milliseconds: 1-16 digits with an optional leading '-';
      2. YYYY-MM-DD[(T| )HH:MM[:SS[.f{1,9}]]][Z|z|+HH:MM|+HHMM|+HH|-...], fraction truncated to
         microseconds, converted to UTC; impossible dates, hour 24 and second 60 are null.
    The result must lie in years 1..9999. pipeline/timestamps.py is the Python twin; a test runs
    both over tests/fixtures/ingest/timestamps.json.
-#}
{% macro parse_timestamp(column) -%}
    {{ return(adapter.dispatch('parse_timestamp', 'sendtime')(column)) }}
{%- endmacro %}

{% macro epoch_ms_pattern() %}{{ return('-?[0-9]{1,16}') }}{% endmacro %}

{% macro iso_timestamp_pattern() -%}
    {{ return('([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.]([0-9]{1,9}))?)?)?(?:([Zz])|([+-])([0-9]{2})(?::?([0-9]{2}))?)?') }}
{%- endmacro %}

{% macro duckdb__parse_timestamp(column) -%}
    {%- set text = clean_string(column) -%}
    {%- set iso = "'" ~ iso_timestamp_pattern() ~ "'" -%}
    {#- the regexp parts are bound once per row through a one-element list and a lambda -#}
    (case
        when regexp_full_match({{ text }}, '{{ epoch_ms_pattern() }}')
            then case
                when try_cast({{ text }} as hugeint) between -62135596800000 and 253402300799999
                    then epoch_ms(cast({{ text }} as bigint))
            end
        when regexp_full_match({{ text }}, {{ iso }})
            then list_transform(list_transform(
                [regexp_extract({{ text }}, {{ iso }}, ['y', 'mo', 'd', 'h', 'mi', 's', 'f', 'z', 'sg', 'oh', 'om'])],
                lambda p: case
                    when p.sg = ''
                        or (cast(p.oh as integer) <= 23 and cast(coalesce(nullif(p.om, ''), '0') as integer) <= 59)
                        then try_strptime(
                            p.y || '-' || p.mo || '-' || p.d || ' '
                            || coalesce(nullif(p.h, ''), '00') || ':' || coalesce(nullif(p.mi, ''), '00') || ':'
                            || coalesce(nullif(p.s, ''), '00') || '.' || rpad(left(p.f, 6), 6, '0'),
                            '%Y-%m-%d %H:%M:%S.%f'
                        ) - case
                            when p.sg = '' then interval 0 minute
                            else (case when p.sg = '-' then -1 else 1 end) * to_minutes(
                                cast(p.oh as integer) * 60 + cast(coalesce(nullif(p.om, ''), '0') as integer)
                            )
                        end
                end
            ), lambda v: case when year(v) between 1 and 9999 then v end)[1]
    end)
{%- endmacro %}

{% macro spark__parse_timestamp(column) -%}
    {#-
        The same rule as duckdb__ (exact: the battery and random inputs agree with Python): the
        parts are extracted once into a struct and bound to `p`; try_make_timestamp rejects
        impossible dates, hour 24 and minute 60; second 60 (which Spark rolls over) is rejected
        here; the offset is subtracted with timestampadd (TIMESTAMP_NTZ, microseconds kept).
    -#}
    {%- set text = clean_string(column) -%}
    {%- set iso = iso_timestamp_pattern() -%}
    {%- set parts = ['y', 'mo', 'd', 'h', 'mi', 's', 'f', 'z', 'sg', 'oh', 'om'] -%}
    {%- set fields = [] -%}
    {%- for part in parts -%}
        {%- do fields.append("'" ~ part ~ "', " ~ regexp_extract_group(text, iso, loop.index)) -%}
    {%- endfor -%}
    {%- set seconds = "coalesce(nullif(p.s, ''), '00')" -%}
    {%- set offset_minutes = "cast(p.oh as int) * 60 + cast(coalesce(nullif(p.om, ''), '0') as int)" -%}
    {%- set local_time -%}
        try_make_timestamp(
            cast(p.y as int), cast(p.mo as int), cast(p.d as int),
            cast(coalesce(nullif(p.h, ''), '00') as int), cast(coalesce(nullif(p.mi, ''), '00') as int),
            cast({{ seconds }} || '.' || rpad(left(p.f, 6), 6, '0') as decimal(8, 6))
        )
    {%- endset -%}
    {%- set utc_time -%}
        case
            when cast({{ seconds }} as int) > 59 then null
            when p.sg = '' then {{ local_time }}
            when cast(p.oh as int) <= 23 and cast(coalesce(nullif(p.om, ''), '0') as int) <= 59
                then timestampadd(MINUTE, (case when p.sg = '-' then 1 else -1 end) * ({{ offset_minutes }}), {{ local_time }})
        end
    {%- endset -%}
    (case
        when {{ regexp_full_match(text, epoch_ms_pattern()) }}
            then case
                when try_cast({{ text }} as bigint) between -62135596800000 and 253402300799999
                    then timestampadd(MILLISECOND, cast({{ text }} as bigint), cast('1970-01-01 00:00:00' as timestamp_ntz))
            end
        when {{ regexp_full_match(text, iso) }}
            then {{ bind('named_struct(' ~ fields | join(', ') ~ ')', 'p', bind(utc_time, 'v', 'case when year(v) between 1 and 9999 then v end')) }}
    end)
{%- endmacro %}

{% macro default__parse_timestamp(column) -%}
    {#- portable fallback: epoch ms and ISO text the warehouse's own cast understands -#}
    (case
        when {{ clean_string(column) }} like '%-%-%'
            then {{ dbt.safe_cast(clean_string(column), api.Column.translate_type('timestamp')) }}
        else {{ epoch_ms_to_timestamp('cast(' ~ clean_string(column) ~ ' as ' ~ dbt.type_bigint() ~ ')') }}
    end)
{%- endmacro %}

{% macro epoch_ms_to_timestamp(column) -%}
    {{ return(adapter.dispatch('epoch_ms_to_timestamp', 'sendtime')(column)) }}
{%- endmacro %}

{% macro duckdb__epoch_ms_to_timestamp(column) -%}
    epoch_ms({{ column }})
{%- endmacro %}

{% macro spark__epoch_ms_to_timestamp(column) -%}
    timestampadd(MILLISECOND, {{ column }}, cast('1970-01-01 00:00:00' as timestamp_ntz))
{%- endmacro %}

{% macro default__epoch_ms_to_timestamp(column) -%}
    {{ dbt.dateadd('second', column ~ ' / 1000.0', "cast('1970-01-01' as " ~ dbt.type_timestamp() ~ ")") }}
{%- endmacro %}
