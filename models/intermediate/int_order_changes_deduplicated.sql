{{ config(unique_key=['order_id', 'change_op', 'change_ts_ms', 'change_row_json']) }}

{{ cdc_changes_deduplicated(
    staging_model='stg_shop__orders',
    lake_table='orders',
    key='order_id',
    columns=['customer_id', 'status', 'currency', 'total_amount', 'created_at', 'updated_at'],
) }}
