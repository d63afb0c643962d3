{#-
    Incremental bookkeeping of the intermediate models and the marts: what changed in this cycle,
    which customers a model recomputes, which stale rows leave. Business rules live in the models
    (and in macros/profile_rules.sql); these macros keep the cycle's mechanics out of their way.
-#}

{% macro changed_in_this_cycle(column='_cycle_id') -%}
    {{ column }} > '{{ last_committed_cycle_id() }}'
{%- endmacro %}

{% macro of_recomputed_customers(column='customer_id') -%}
    {#- a filter: the customers this cycle recomputes (everyone on a full rebuild) -#}
    {{ column }} in (select touched.customer_id from {{ ref('int_customers_touched') }} as touched)
{%- endmacro %}

{% macro delete_stale_rows(customers_sql) -%}
    {#- post-hook: after delete+insert replaced the recomputed customers that still have rows, drop
        the old rows of those that have none left (erased, nothing to recommend, ...) -#}
    {%- if is_incremental() -%}
        {{ delete_matching(
            target=this,
            target_alias='stored',
            source_sql=customers_sql,
            source_alias='recomputed',
            condition='recomputed.customer_id = stored.customer_id',
            target_filter="stored._cycle_id != '" ~ cycle_id() ~ "'",
        ) }}
    {%- endif -%}
{%- endmacro %}

{% macro lists_rewritten(new_lists, stored_lists, list_column) -%}
    {#-
        The customers whose list a cycle recomputed (`new_lists`: customer_id, list_column) and
        that differ from the stored one (`stored_lists`, this model's own rows); every recomputed
        customer on a full rebuild. Lists are compared whole (order and every element).
    -#}
    select new_lists.customer_id
    from {{ new_lists }} as new_lists
    {%- if is_incremental() %}
    left join {{ stored_lists }} as stored_lists
        on new_lists.customer_id = stored_lists.customer_id
    where stored_lists.customer_id is null
        or new_lists.{{ list_column }} != stored_lists.{{ list_column }}
    {%- endif %}
{%- endmacro %}

{% macro profiles_to_rewrite(summaries, recommendations, send_hours=none) -%}
    {#-
        The customer_profiles rows a cycle writes: customers whose summary changed, customers whose
        recommendations changed (the lists of `recommendations` recomputed in this cycle that differ
        from the stored profile's) and stored profiles whose lifecycle stage as_of moved, in either
        direction. With `send_hours` (int_customer_send_hours_scored), also customers whose send hour
        was recomputed and differs from the stored one, and stored profiles whose 30-day email
        counts as_of moved (macros/engagement.sql). Everyone on a full rebuild.
    -#}
    {#- parsing renders the full-rebuild branch: record the dependency of the incremental one -#}
    {%- set cycles = ref('int_cycles_registered') -%}
    {%- if is_incremental() %}
    select customer_id from {{ summaries }}
    where {{ changed_in_this_cycle() }}

    union

    select new_lists.customer_id
    from (
        select
            customer_id,
            {{ ordered_list('product_id', 'recommendation_rank', 'product_id is not null') }} as recommendations
        from {{ recommendations }}
        where {{ changed_in_this_cycle() }}
        group by customer_id
    ) as new_lists
    inner join {{ this }} as stored_profiles
        on new_lists.customer_id = stored_profiles.customer_id
    where new_lists.recommendations != stored_profiles.recommendations

    union

    select customer_id from {{ this }}
    where lifecycle_stage != {{ lifecycle_stage('last_order_at', as_of()) }}
    {%- if send_hours %}

    union

    select new_hours.customer_id
    from {{ send_hours }} as new_hours
    inner join {{ this }} as stored_profiles
        on new_hours.customer_id = stored_profiles.customer_id
    where
        {{ changed_in_this_cycle('new_hours._cycle_id') }}
        and (
            new_hours.best_send_hour != stored_profiles.best_send_hour
            or new_hours.best_send_hour_confidence != stored_profiles.best_send_hour_confidence
        )

    union

    select customer_id from {{ this }}
    where {{ email_counts_moved(as_of()) }}
    {%- endif %}
    {%- else %}
    select customer_id from {{ summaries }}
    {%- endif %}
{%- endmacro %}

{% macro recommendation_text() -%}
    {#- one recommendation as text, so two lists compare as lists of strings -#}
    {{ dbt.concat(['product_id', "'|'", 'cast(score as ' ~ dbt.type_string() ~ ')', "'|'", 'reason']) }}
{%- endmacro %}
