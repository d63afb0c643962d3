{{ config(unique_key='order_id') }}

{{ cdc_current_state(
    changes_model='int_order_changes_deduplicated',
    key='order_id',
    columns=['customer_id', 'status', 'currency', 'total_amount', 'created_at', 'updated_at'],
    tracked_columns=['customer_id'],
) }}
