{{ config(unique_key=['customer_id', 'change_op', 'change_ts_ms', 'change_row_json']) }}

{{ cdc_changes_deduplicated(
    staging_model='stg_crm__customers',
    lake_table='customers',
    key='customer_id',
    columns=['email', 'first_name', 'last_name', 'country', 'locale', 'timezone',
             'marketing_consent', 'created_at', 'updated_at'],
) }}
