// Prints murmur2 / partition test vectors for keyshift's hash.rs tests.
// murmur2 and toPositive are verbatim copies of org.apache.kafka.common.utils.Utils
// (Apache Kafka clients, Apache-2.0). Run: javac KafkaMurmur2Vectors.java && java KafkaMurmur2Vectors
import java.nio.charset.StandardCharsets;

public class KafkaMurmur2Vectors {
    public static int murmur2(final byte[] data) {
        int length = data.length;
        int seed = 0x9747b28c;
        final int m = 0x5bd1e995;
        final int r = 24;
        int h = seed ^ length;
        int length4 = length / 4;
        for (int i = 0; i < length4; i++) {
            final int i4 = i * 4;
            int k = (data[i4 + 0] & 0xff) + ((data[i4 + 1] & 0xff) << 8) + ((data[i4 + 2] & 0xff) << 16) + ((data[i4 + 3] & 0xff) << 24);
            k *= m;
            k ^= k >>> r;
            k *= m;
            h *= m;
            h ^= k;
        }
        switch (length % 4) {
            case 3:
                h ^= (data[(length & ~3) + 2] & 0xff) << 16;
            case 2:
                h ^= (data[(length & ~3) + 1] & 0xff) << 8;
            case 1:
                h ^= data[length & ~3] & 0xff;
                h *= m;
        }
        h ^= h >>> 13;
        h *= m;
        h ^= h >>> 15;
        return h;
    }

    public static int toPositive(int number) {
        return number & 0x7fffffff;
    }

    static String hex(byte[] b) {
        StringBuilder s = new StringBuilder();
        for (byte x : b) s.append(String.format("%02x", x & 0xff));
        return s.toString();
    }

    static void row(byte[] key) {
        int h = murmur2(key);
        int p = toPositive(h);
        // hex key bytes, murmur2 as signed int, then partition for n = 1, 3, 10, 100
        System.out.printf("    (\"%s\", %d, [%d, %d, %d, %d]),%n", hex(key), h, p % 1, p % 3, p % 10, p % 100);
    }

    public static void main(String[] args) {
        String[] strs = {
            "", "a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg", "abcdefgh", "abcdefghi",
            "abcdefghij", "abcdefghijk", "abcdefghijkl", "abcdefghijklm", "hello", "kafka",
            "The quick brown fox jumps over the lazy dog",
            "ключ", "日本語", "\u00e9", "\u20ac",
            "location_0", "location_1", "location_2", "location_3", "location_4",
            "location_5", "location_6", "location_7", "location_8", "location_9",
            "location_2799",
        };
        for (String s : strs) row(s.getBytes(StandardCharsets.UTF_8));
        byte[][] raw = {
            {(byte) 0x80}, {(byte) 0xff}, {(byte) 0xff, (byte) 0xfe}, {(byte) 0x80, (byte) 0x81, (byte) 0x82},
            {(byte) 0xff, (byte) 0xff, (byte) 0xff, (byte) 0xff}, {0, 0, 0, 0, 0},
            {(byte) 0xde, (byte) 0xad, (byte) 0xbe, (byte) 0xef, (byte) 0xca, (byte) 0xfe},
            {(byte) 0x90, (byte) 0xa0, (byte) 0xb0, (byte) 0xc0, (byte) 0xd0, (byte) 0xe0, (byte) 0xf0},
        };
        for (byte[] b : raw) row(b);
        byte[] all = new byte[256];
        for (int i = 0; i < 256; i++) all[i] = (byte) i;
        row(all);
    }
}
