/* Echoes its event: the smallest Java grain, for the hop latency of the Java runtime. */
package bench;

import sand.Context;
import sand.Grain;

public final class Echo implements Grain {
    @Override
    public String handle(String event, Context ctx) {
        return event;
    }
}
