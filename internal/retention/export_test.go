package retention

// PayloadBatchSQL is the purge's selection of the next runs due for a
// payload purge, for the test of its plan.
const PayloadBatchSQL = payloadBatch
