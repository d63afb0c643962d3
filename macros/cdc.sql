{#-
    Change data capture (DESIGN.md "customers, orders, order_items"), in two steps:
    1. cdc_changes_deduplicated: every distinct change (key, op, ts_ms, row) once, at its first
       ingestion position, so re-ingesting a file changes nothing;
    2. cdc_current_state: per key, the change with the greatest ts_ms; ties by the greater
       source.lsn when present, then by the later ingestion position. op 'd' is a tombstone.
    Both run on the keys that changed in this cycle only.
-#}

{% macro cdc_change_identity(key) -%}
    {{ key }}, change_op, change_ts_ms, change_row_json
{%- endmacro %}

{% macro cdc_changes_deduplicated(staging_model, lake_table, key, columns) -%}

with

changes as (

    select * from {{ ref(staging_model) }}

),

{% if is_incremental() %}
current_changes as (

    select * from {{ this }}

),
{% endif %}

arrived as (

    select * from changes
    where {{ lake_batches_of_this_cycle(lake_table) }}

),

candidates as (

    select
        {{ key }}, change_op, change_ts_ms, change_lsn, change_row_json,
        {%- for column in columns %}
        {{ column }},
        {%- endfor %}
        _batch_id, _ingested_at, _source_line
    from arrived

    {% if is_incremental() %}
    union all

    select
        {{ key }}, change_op, change_ts_ms, change_lsn, change_row_json,
        {%- for column in columns %}
        {{ column }},
        {%- endfor %}
        _batch_id, _ingested_at, _source_line
    from current_changes
    where {{ key }} in (select arrived.{{ key }} from arrived)
    {% endif %}

),

first_positions as (

    {{ deduplicate(
        'candidates',
        partition_by=cdc_change_identity(key),
        order_by='_ingested_at, _batch_id, _source_line',
    ) }}

),

new_changes as (

    select first_positions.*
    from first_positions
    {%- if is_incremental() %}
    left join current_changes
        on first_positions.{{ key }} = current_changes.{{ key }}
        and first_positions.change_op = current_changes.change_op
        and first_positions.change_ts_ms = current_changes.change_ts_ms
        and first_positions.change_row_json = current_changes.change_row_json
        and first_positions._batch_id = current_changes._batch_id
        and first_positions._source_line = current_changes._source_line
    where current_changes.{{ key }} is null
    {%- endif %}

),

final as (

    select
        *,
        '{{ cycle_id() }}' as _cycle_id
    from new_changes

)

select * from final

{%- endmacro %}


{% macro cdc_current_state(changes_model, key, columns, tracked_columns=[]) -%}
{#- tracked_columns: their value before this change is kept as previous_<column>, so a row moving
    (an order to another customer) touches both sides. A product_id column is canonicalized
    through the product_id_aliases seed. -#}

with

changes as (

    select * from {{ ref(changes_model) }}

),

{% if 'product_id' in columns %}
product_id_aliases as (

    select * from {{ ref('product_id_aliases') }}

),
{% endif %}

{% if is_incremental() %}
current_state as (

    select * from {{ this }}

),
{% endif %}

changed_keys as (

    select distinct {{ key }} from changes
    where {{ changed_in_this_cycle() }}

),

changes_of_changed_keys as (

    select * from changes
    where {{ key }} in (select changed_keys.{{ key }} from changed_keys)

),

latest_changes as (

    {{ deduplicate(
        'changes_of_changed_keys',
        partition_by=key,
        order_by='change_ts_ms desc, change_lsn desc nulls last, _ingested_at desc, _batch_id desc, _source_line desc',
    ) }}

),

new_state as (

    select
        latest_changes.*,
        {%- for column in tracked_columns %}
        {{ 'current_state.' ~ column if is_incremental() else 'cast(null as ' ~ dbt.type_string() ~ ')' }} as previous_{{ column }},
        {%- endfor %}
        latest_changes.change_op = 'd' as is_deleted
    from latest_changes
    {%- if is_incremental() %}
    left join current_state
        on latest_changes.{{ key }} = current_state.{{ key }}
    where
        current_state.{{ key }} is null
        or current_state.change_op != latest_changes.change_op
        or current_state.change_ts_ms != latest_changes.change_ts_ms
        or current_state.change_row_json != latest_changes.change_row_json
        or current_state.change_lsn is distinct from latest_changes.change_lsn
    {%- endif %}

),

final as (

    select
        ---------- ids
        new_state.{{ key }},

        ---------- columns of the current row
        {%- for column in columns %}
        {%- if column == 'product_id' %}
        {{ canonical_product_id('new_state.product_id', 'product_id_aliases.product_id') }} as product_id,
        {%- else %}
        new_state.{{ column }},
        {%- endif %}
        {%- endfor %}
        {%- for column in tracked_columns %}
        new_state.previous_{{ column }},
        {%- endfor %}

        ---------- change data capture
        new_state.change_op,
        new_state.change_ts_ms,
        new_state.change_lsn,
        new_state.change_row_json,
        new_state.is_deleted,
        {{ epoch_ms_to_timestamp('new_state.change_ts_ms') }} as changed_at,

        ---------- lake metadata
        new_state._batch_id,
        new_state._ingested_at,
        new_state._source_line,
        '{{ cycle_id() }}' as _cycle_id

    from new_state
    {%- if 'product_id' in columns %}
    left join product_id_aliases
        on new_state.product_id = product_id_aliases.alias
    {%- endif %}

)

select * from final

{%- endmacro %}
